"""Metrics, statistics, oracle matching, seeding and baselines against hand-computed small cases."""

import math

import numpy as np
import pytest

from ZeroShotDiffusionSegLib.evaluation import baselines
from ZeroShotDiffusionSegLib.evaluation.metrics import case_metrics, dice, hd95, iou, surface
from ZeroShotDiffusionSegLib.evaluation.oracle import greedy_union, hungarian_segment, per_slice_unique
from ZeroShotDiffusionSegLib.evaluation.seeding import seed_at_centroid
from ZeroShotDiffusionSegLib.evaluation.statistics import summarize


def _box(shape, rows, cols):
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


# Prediction: 2x2 block; truth: the same block widened to 2x3. Overlap 4, |P| 4, |T| 6.
PREDICTION = _box((4, 4), (0, 2), (0, 2))
TRUTH = _box((4, 4), (0, 2), (0, 3))


def test_dice_and_iou_by_hand():
    assert dice(PREDICTION, TRUTH) == pytest.approx(2 * 4 / (4 + 6))
    assert iou(PREDICTION, TRUTH) == pytest.approx(4 / 6)


def test_hd95_by_hand_in_pixels_and_with_anisotropic_spacing():
    # Every pixel of both masks is surface (they are two rows high). Prediction -> truth distances
    # are all 0; truth -> prediction: the two column-2 pixels are one column away, so the 95th
    # percentile of [0, 0, 0, 0, 1, 1] is 1 column.
    assert hd95(PREDICTION, TRUTH) == pytest.approx(1.0)
    # Spacing follows the array axes (rows, columns): a column step is 3 mm here.
    assert hd95(PREDICTION, TRUTH, spacing=(2.0, 3.0)) == pytest.approx(3.0)


def test_hd95_single_points_2d_and_3d():
    a = np.zeros((5, 5), bool)
    b = np.zeros((5, 5), bool)
    a[0, 0] = True
    b[3, 4] = True
    assert hd95(a, b) == pytest.approx(5.0)  # 3-4-5 triangle
    a3 = np.zeros((3, 2, 2), bool)
    b3 = np.zeros((3, 2, 2), bool)
    a3[0, 0, 0] = True
    b3[1, 0, 0] = True
    assert hd95(a3, b3, spacing=(5.0, 1.0, 1.0)) == pytest.approx(5.0)


def test_hd95_matches_brute_force_on_random_blobs():
    """The crop to the joint bounding box must not change the answer."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        a = np.zeros((30, 40), bool)
        b = np.zeros((30, 40), bool)
        for mask in (a, b):
            r, c = rng.integers(5, 25), rng.integers(5, 35)
            mask[r - rng.integers(1, 5):r + rng.integers(1, 5), c - rng.integers(1, 5):c + rng.integers(1, 5)] = True
        spacing = np.array([0.7, 1.3])
        pa, pb = np.argwhere(surface(a)) * spacing, np.argwhere(surface(b)) * spacing
        distances = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
        expected = max(np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95))
        assert hd95(a, b, spacing=tuple(spacing)) == pytest.approx(expected)


def test_empty_mask_conventions():
    empty = np.zeros((4, 4), bool)
    both_empty = case_metrics(empty, empty)
    assert (both_empty["dice"], both_empty["iou"], both_empty["hd95"]) == (1.0, 1.0, 0.0)
    empty_prediction = case_metrics(empty, TRUTH)
    assert (empty_prediction["dice"], empty_prediction["iou"]) == (0.0, 0.0)
    assert math.isnan(empty_prediction["hd95"])
    empty_truth = case_metrics(PREDICTION, empty)
    assert (empty_truth["dice"], empty_truth["iou"]) == (0.0, 0.0)
    assert math.isnan(empty_truth["hd95"])
    assert (empty_truth["predicted_voxels"], empty_truth["true_voxels"]) == (4, 0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))


def test_summary_by_hand_and_reproducible():
    summary = summarize([1.0, 2.0, 3.0, 4.0, math.nan])
    assert summary["n"] == 4 and summary["n_undefined"] == 1
    assert summary["mean"] == pytest.approx(2.5)
    assert summary["sd"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert summary["median"] == pytest.approx(2.5)
    assert 1.0 <= summary["ci_low"] < 2.5 < summary["ci_high"] <= 4.0
    assert summarize([1.0, 2.0, 3.0, 4.0]) == {**summary, "n_undefined": 0}  # fixed bootstrap seed
    single = summarize([0.7])
    assert (single["sd"], single["ci_low"], single["ci_high"]) == (0.0, 0.7, 0.7)
    assert summarize([])["n"] == 0 and math.isnan(summarize([])["mean"])


# Constructed partition (6x6): segment 0 = columns 0-2; 1 = columns 3-4, rows 0-3 (8 px);
# 2 = columns 3-4, rows 4-5 (4 px); 3 = column 5 (6 px). The lesion = segments 1 and 2 plus the top
# two pixels of segment 3 (14 px).
LABELS = np.zeros((6, 6), np.int64)
LABELS[0:4, 3:5] = 1
LABELS[4:6, 3:5] = 2
LABELS[:, 5] = 3
LESION = (LABELS == 1) | (LABELS == 2)
LESION[0:2, 5] = True


def test_hungarian_picks_the_best_single_segment():
    mask, chosen = hungarian_segment(LABELS, LESION)
    # Lesion IoUs: seg1 8/14, seg2 4/14, seg3 2/18, seg0 0; the background goes to seg0.
    assert chosen == [1]
    assert np.array_equal(mask, LABELS == 1)


def test_greedy_union_adds_segments_while_iou_rises():
    mask, chosen = greedy_union(LABELS, LESION)
    # seg1 (8/14) + seg2 (12/14 = 0.857); adding seg3 would give 14/18 = 0.778, so it stops.
    assert chosen == [1, 2]
    assert iou(mask, LESION) == pytest.approx(12 / 14)


def test_hungarian_leaves_a_small_lesion_unmatched_by_a_single_segment():
    labels = np.zeros((4, 4), np.int64)
    truth = np.zeros((4, 4), bool)
    truth[0, 0] = True
    mask, chosen = hungarian_segment(labels, truth)
    assert chosen == [] and not mask.any()  # the one segment matches the background far better


def test_oracles_predict_nothing_for_an_empty_truth():
    empty = np.zeros(LABELS.shape, bool)
    for oracle in (hungarian_segment, greedy_union):
        mask, chosen = oracle(LABELS, empty)
        assert chosen == [] and not mask.any(), oracle.__name__


def test_per_slice_unique_separates_ids_between_slices():
    stack = np.stack([np.array([[0, 1]]), np.array([[0, 1]])])
    unique = per_slice_unique(stack, axis=0)
    assert unique[0].tolist() == [[0, 1]] and unique[1].tolist() == [[2, 3]]


def test_seed_at_centroid_and_nearest_pixel_for_a_ring():
    assert seed_at_centroid(np.zeros((3, 3), bool)) is None
    assert seed_at_centroid(_box((5, 5), (1, 4), (1, 4))) == (2, 2)
    ring = _box((7, 7), (1, 6), (1, 6)) & ~_box((7, 7), (2, 5), (2, 5))
    seed = seed_at_centroid(ring)
    assert ring[seed]
    assert abs(seed[0] - 3) + abs(seed[1] - 3) == 2  # the middle of a side, two pixels from the centre


def test_baselines_select_the_bright_square_under_the_seed():
    image = np.full((12, 12), 0.1)
    image[2:6, 2:6] = 0.9
    image[8:11, 8:11] = 0.9  # same intensity, not connected: must not be selected
    expected = _box((12, 12), (2, 6), (2, 6))
    assert np.array_equal(baselines.otsu_seed(image, (3, 3)), expected)
    assert np.array_equal(baselines.kmeans_seed(image, (3, 3), clusters=2), expected)
    rgb = np.repeat(image[..., None], 3, axis=2)
    assert np.array_equal(baselines.otsu_seed(rgb, (3, 3)), expected)


def test_otsu_threshold_splits_two_levels_and_baselines_work_in_3d():
    threshold = baselines.otsu_threshold(np.array([0.0, 0.0, 1.0, 1.0]))
    assert 0.0 <= threshold < 1.0
    volume = np.zeros((4, 6, 6))
    volume[1:3, 1:4, 1:4] = 100.0
    selected = baselines.otsu_seed(volume, (1, 2, 2), is_volume=True)
    assert selected.sum() == 2 * 3 * 3 and selected[1:3, 1:4, 1:4].all()
