"""The live threshold: score map (float 0..1) + slider value -> lesion labels and their table.

Runs on the main thread on every slider move, so it is only numpy/scipy on arrays the
panel already holds (the score volume read once after the run); no engine call. Lesions
are numbered and measured by the volume pipeline's own functions, so at the engine's
threshold the live result equals labels.nrrd and lesions.csv.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from ..volume.consolidation import lesion_table, number_lesions
from ..volume.slicing import choose_slice_axis
from .geometry import Geometry, apply_geometry_to_sitk_image


def binary_mask(score: np.ndarray, threshold: float, region: Optional[np.ndarray] = None) -> np.ndarray:
    """Voxels whose score is at least ``threshold``, optionally only inside ``region``."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    mask = np.asarray(score) >= np.float32(threshold)
    if region is not None:
        mask &= np.asarray(region, dtype=bool)
    return mask


def threshold_to_labels(score: np.ndarray, threshold: float, voxel_volume_mm3: float, min_volume_mm3: float = 0.0,
                        per_lesion: bool = True, region: Optional[np.ndarray] = None) -> Tuple[np.ndarray, int]:
    """Labels for the result segments: lesions 1..n (largest first), or 0/1 when ``per_lesion`` is off.

    Lesions smaller than ``min_volume_mm3`` are dropped in both cases, as the engine drops them.
    """
    labels, _dropped = number_lesions(binary_mask(score, threshold, region), voxel_volume_mm3, min_volume_mm3)
    count = int(labels.max()) if labels.size else 0
    if per_lesion:
        return labels, count
    return (labels > 0).astype(np.uint16), int(count > 0)


def lesion_rows(labels: np.ndarray, score: np.ndarray, geometry: Geometry) -> List[dict]:
    """The rows of lesions.csv for ``labels`` (numpy k, j, i order) on a volume with ``geometry``."""
    carrier = sitk.Image(1, 1, 1, sitk.sitkUInt8)  # holds the geometry only; the measures read no pixels
    apply_geometry_to_sitk_image(carrier, geometry)  # converts a RAS geometry to ITK's LPS
    axial_axis = choose_slice_axis(carrier.GetDirection(), "axial")
    return lesion_table(labels, score, carrier, axial_axis)


def slider_range(score: np.ndarray) -> Tuple[float, float]:
    """Useful slider bounds: from the smallest non-zero score to the maximum, clipped to [0, 1]."""
    positive = score[score > 0]
    if positive.size == 0:
        return 0.0, 1.0
    return float(max(positive.min(), 0.0)), float(min(positive.max(), 1.0))
