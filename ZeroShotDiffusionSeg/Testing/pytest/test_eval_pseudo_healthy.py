"""The ``pseudo_healthy`` column of ``zsdseg eval`` with a stub engine and a stand-in inpainter whose
counterfactual is known: the refined rule is scored beside the deployed selection it starts from."""

import json

import numpy as np
import pytest
from PIL import Image

from test_eval_cli import SIZE, QuadrantSegmenter, _parse
from ZeroShotDiffusionSegLib.evaluation import cli

BACKGROUND = 30 / 255


class BackgroundInpainter:
    def repaint(self, images, regions, keys, normal_prompt, negative_prompt, params, cancel=None, on_step=None):
        return [np.where(region, np.float32(BACKGROUND), image).astype(np.float32) for image, region in zip(images, regions)]

    def feature_distance(self, images, healthy):
        return [np.zeros(image.shape[:2], dtype=np.float32) for image in images]


class BottomHalfSegmenter(QuadrantSegmenter):
    """Prompt mode selects the bottom half: twice the lesion (the bottom-right quadrant)."""

    def segment_batch(self, images, prompt=None, seeds=None, params=None):
        results = super().segment_batch(images, prompt, seeds, params)
        for result in results:
            result.mask = result.labels >= 2
        return results

    def pseudo_healthy_inpainter(self):
        return BackgroundInpainter()


def test_the_refined_rule_is_a_column_beside_deployed(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    image = np.full((SIZE, SIZE), 30, np.uint8)
    image[8:16, 8:16] = 220
    Image.fromarray(image).save(root / "case1.png")
    Image.fromarray(np.where(image > 100, 255, 0).astype(np.uint8)).save(root / "case1_mask.png")
    monkeypatch.setattr(cli, "_load_segmenter", lambda args: BottomHalfSegmenter())
    out = tmp_path / "out"
    assert cli.run(_parse(str(root), "--model", "random:stub", "--prompt", "lesion", "--pseudo-healthy", "--no-baselines",
                          "--no-overlays", "--out", str(out))) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["modes"] == ["deployed", "oracle_single", "oracle_union", "deployed_plain", "pseudo_healthy"]
    summary = results["summary"]
    assert summary["deployed"]["dice"]["mean"] == pytest.approx(2 * 64 / (64 + 128))
    assert summary["pseudo_healthy"]["dice"]["mean"] == pytest.approx(1.0)
    assert "pseudo_healthy" in (out / "report.md").read_text()
