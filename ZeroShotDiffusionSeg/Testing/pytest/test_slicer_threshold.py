"""Score map + threshold -> segment labels (the live slider)."""

import numpy as np
import pytest

from ZeroShotDiffusionSegLib.slicer.geometry import make_geometry
from ZeroShotDiffusionSegLib.slicer.threshold import binary_mask, lesion_rows, slider_range, threshold_to_labels


def two_blobs():
    score = np.zeros((6, 10, 10), dtype=np.float32)
    score[1:4, 1:5, 1:5] = 0.9  # 48 voxels
    score[2, 7:9, 7:9] = 0.6  # 4 voxels
    score[5, 0, 9] = 0.3  # single weak voxel
    return score


def test_binary_mask_threshold_is_inclusive():
    score = two_blobs()
    assert binary_mask(score, 0.6).sum() == 52
    assert binary_mask(score, 0.61).sum() == 48
    assert binary_mask(score, 0.0).all()
    region = np.zeros(score.shape, bool)
    region[:, :, 6:] = True
    assert binary_mask(score, 0.5, region).sum() == 4
    with pytest.raises(ValueError):
        binary_mask(score, 1.5)


def test_lesions_are_numbered_largest_first_and_small_ones_dropped():
    labels, count = threshold_to_labels(two_blobs(), 0.25, voxel_volume_mm3=1.0)
    assert count == 3
    assert (labels == 1).sum() == 48 and (labels == 2).sum() == 4 and (labels == 3).sum() == 1
    labels, count = threshold_to_labels(two_blobs(), 0.25, voxel_volume_mm3=0.5, min_volume_mm3=1.0)
    assert count == 2 and labels.max() == 2 and labels[5, 0, 9] == 0


def test_raising_the_threshold_removes_the_weaker_lesion():
    labels, count = threshold_to_labels(two_blobs(), 0.7, voxel_volume_mm3=1.0)
    assert count == 1 and (labels == 1).sum() == 48


def test_one_segment_mode_gives_a_binary_label():
    labels, count = threshold_to_labels(two_blobs(), 0.5, 1.0, per_lesion=False)
    assert count == 1 and set(np.unique(labels)) == {0, 1} and labels.sum() == 52
    labels, count = threshold_to_labels(two_blobs(), 0.5, 1.0, min_volume_mm3=10, per_lesion=False)
    assert labels.sum() == 48
    labels, count = threshold_to_labels(two_blobs(), 0.95, 1.0, per_lesion=False)
    assert count == 0 and labels.sum() == 0


def test_lesions_are_face_connected_like_the_engine():
    score = np.zeros((3, 3, 3), np.float32)
    score[0, 0, 0] = score[1, 1, 1] = score[1, 1, 2] = 1.0
    labels, count = threshold_to_labels(score, 0.5, 1.0)
    assert count == 2 and (labels == 1).sum() == 2


def test_lesion_rows_measure_volume_diameter_and_ras_centre():
    score = np.zeros((5, 20, 20), np.float32)
    score[2, 5:15, 8:12] = 0.8  # 10 rows (j) x 4 columns (i) in one axial slice
    labels, _ = threshold_to_labels(score, 0.5, voxel_volume_mm3=0.5 * 0.5 * 2.0)
    geometry = make_geometry((10.0, -20.0, 5.0), (0.5, 0.5, 2.0), np.eye(3), "RAS")
    (row,) = lesion_rows(labels, score, geometry)
    assert row["voxels"] == 40 and row["volume_ml"] == pytest.approx(40 * 0.5 / 1000)
    assert row["longest_axial_diameter_mm"] == pytest.approx(np.hypot(9 * 0.5, 3 * 0.5), abs=0.01)
    # centre voxel (i=9.5, j=9.5, k=2) in the RAS geometry above
    assert (row["centroid_ras_x"], row["centroid_ras_y"], row["centroid_ras_z"]) == pytest.approx((14.75, -15.25, 9.0))
    assert row["mean_score"] == pytest.approx(0.8)


def test_slider_range_spans_the_nonzero_scores():
    assert slider_range(two_blobs()) == (pytest.approx(0.3), pytest.approx(0.9))
    assert slider_range(np.zeros((2, 2))) == (0.0, 1.0)
