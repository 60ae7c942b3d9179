"""Overlap and boundary metrics between a predicted and a true binary mask (2-D or 3-D).

Conventions for empty masks (stated in every report):

* both empty: Dice 1, IoU 1, HD95 0 -- nothing to find and nothing found is a perfect answer;
* exactly one empty: Dice 0, IoU 0, HD95 undefined (NaN). A distance to nothing does not
  exist, so such cases are left out of the HD95 statistics and counted separately
  (``n_undefined``) instead of being folded in as infinity or an arbitrary penalty.

HD95 is the symmetric 95th-percentile Hausdorff distance: the larger of the two directed
95th percentiles of the distances from one mask's surface voxels to the other's surface
(the MONAI definition). Surface voxels are mask voxels with at least one face neighbour
outside the mask (or on the array's edge). Distances are in the units of ``spacing``
(millimetres for volumes read with their spacing; pixels when spacing is None).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage


def _as_bool_pair(prediction: np.ndarray, truth: np.ndarray):
    prediction = np.asarray(prediction).astype(bool, copy=False)
    truth = np.asarray(truth).astype(bool, copy=False)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from truth shape {truth.shape}")
    return prediction, truth


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    prediction, truth = _as_bool_pair(prediction, truth)
    total = int(prediction.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(prediction, truth).sum()) / total


def iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    prediction, truth = _as_bool_pair(prediction, truth)
    union = int(np.logical_or(prediction, truth).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(prediction, truth).sum()) / union


def surface(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with a face neighbour outside the mask; voxels on the array edge count as surface."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _crop_to_union(prediction: np.ndarray, truth: np.ndarray):
    """Crop both masks to their joint bounding box plus one voxel. Surface-to-surface distances
    only involve voxels inside that box, and the one-voxel margin keeps a mask that does not
    touch the array's edge from gaining a false surface at the crop's edge; this makes HD95 on a
    512x512x61 CT take milliseconds instead of seconds."""
    coords = np.nonzero(prediction | truth)
    slices = tuple(slice(max(int(c.min()) - 1, 0), int(c.max()) + 2) for c in coords)
    return prediction[slices], truth[slices]


def hd95(prediction: np.ndarray, truth: np.ndarray, spacing: Optional[Sequence[float]] = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance; 0 if both empty, NaN if exactly one is empty.

    ``spacing`` is per array axis, in the same order as the array's axes (for a SimpleITK image
    read as a (z, y, x) array, pass ``image.GetSpacing()[::-1]``)."""
    prediction, truth = _as_bool_pair(prediction, truth)
    has_prediction, has_truth = bool(prediction.any()), bool(truth.any())
    if not has_prediction and not has_truth:
        return 0.0
    if has_prediction != has_truth:
        return math.nan
    if spacing is not None and len(spacing) != prediction.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for a {prediction.ndim}-D mask")
    prediction, truth = _crop_to_union(prediction, truth)
    prediction_surface, truth_surface = surface(prediction), surface(truth)
    sampling = None if spacing is None else [float(s) for s in spacing]
    # Distance from every voxel to the nearest surface voxel of the other mask.
    to_truth = ndimage.distance_transform_edt(~truth_surface, sampling=sampling)
    to_prediction = ndimage.distance_transform_edt(~prediction_surface, sampling=sampling)
    return float(
        max(
            np.percentile(to_truth[prediction_surface], 95),
            np.percentile(to_prediction[truth_surface], 95),
        )
    )


def case_metrics(prediction: np.ndarray, truth: np.ndarray, spacing: Optional[Sequence[float]] = None) -> dict:
    """All per-case numbers for one prediction, as plain floats and ints for JSON."""
    prediction, truth = _as_bool_pair(prediction, truth)
    return {
        "dice": dice(prediction, truth),
        "iou": iou(prediction, truth),
        "hd95": hd95(prediction, truth, spacing),
        "predicted_voxels": int(prediction.sum()),
        "true_voxels": int(truth.sum()),
    }
