"""The ``pseudo_healthy`` column of ``zsdseg eval`` with a stub engine and a stand-in inpainter whose
counterfactual is known: the refined rule is scored beside the deployed selection it starts from."""

import json

import numpy as np
import pytest
from PIL import Image

from test_eval_cli import SIZE, QuadrantSegmenter, _parse, _volume_folder
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


class BrightOutlierRemover:
    """Repaints what is far brighter than the slice's median (a lesion, not texture) as the median; a slice
    without such pixels comes back unchanged, so its residual is empty."""

    def repaint(self, images, regions, keys, normal_prompt, negative_prompt, params, cancel=None, on_step=None):
        out = []
        for image, region in zip(images, regions):
            median = np.float32(np.median(image))
            out.append(np.where(region & (image > median + 0.2), median, image).astype(np.float32))
        return out

    def feature_distance(self, images, healthy):
        return [np.zeros(image.shape[:2], dtype=np.float32) for image in images]


class QuadrantHealthySegmenter(QuadrantSegmenter):
    def pseudo_healthy_inpainter(self):
        return BrightOutlierRemover()


def test_a_volume_case_gets_the_column_from_the_volume_pipeline(tmp_path, monkeypatch):
    """Seed mode selects the seed's quadrant on all four slices (Dice 2/3); the counterfactual removes the
    lesion only on its two slices, so the refined rule keeps exactly the lesion."""
    root = _volume_folder(tmp_path)
    monkeypatch.setattr(cli, "_load_segmenter", lambda args: QuadrantHealthySegmenter())
    out = tmp_path / "out"
    assert cli.run(_parse(str(root), "--layout", "nrrd-pairs", "--model", "random:stub", "--pseudo-healthy",
                          "--no-baselines", "--no-overlays", "--out", str(out))) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["modes"] == ["deployed", "oracle_single", "oracle_union", "pseudo_healthy"]
    metrics = results["cases"][0]["metrics"]
    assert metrics["deployed"]["dice"] == pytest.approx(2 * 128 / (256 + 128))
    assert metrics["pseudo_healthy"]["dice"] == pytest.approx(1.0)
    provenance = json.loads((out / "volumes" / "case" / "pseudo_healthy" / "provenance.json").read_text())
    assert provenance["pseudo_healthy"]["slices_repainted"] == 4


def test_a_prompt_volume_case_refines_from_the_same_pass(tmp_path, monkeypatch, tiny_segmenter):
    """Prompt selection: the column's run takes the pass from the query cache the deployed runs filled, so the
    repaint is the only new work (random:tiny: the mechanics, not the quality)."""
    root = _volume_folder(tmp_path)
    monkeypatch.setattr(cli, "_load_segmenter", lambda args: tiny_segmenter)
    out = tmp_path / "out"
    assert cli.run(_parse(str(root), "--layout", "nrrd-pairs", "--model", "random:tiny", "--prompt", "tumor",
                          "--pseudo-healthy", "--no-baselines", "--no-overlays", "--out", str(out))) == 0
    case = json.loads((out / "results.json").read_text())["cases"][0]
    assert case["status"] == "ok", case.get("error")
    assert "pseudo_healthy" in case["metrics"]
    runtime = json.loads((out / "volumes" / "case" / "pseudo_healthy" / "provenance.json").read_text())["runtime"]
    assert runtime["query_cache"] == "memory hit"
