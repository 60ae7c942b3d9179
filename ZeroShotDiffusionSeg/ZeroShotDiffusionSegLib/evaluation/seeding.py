"""Where an evaluation puts the one click a user would give: the ground truth's centroid, or
the truth voxel nearest to it when the centroid falls outside the lesion (a crescent, a ring,
two foci). The deployed seed mode and both baselines use this same seed."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from scipy import ndimage


def seed_at_centroid(truth: np.ndarray) -> Optional[Tuple[int, ...]]:
    """Array index (row, col) or (z, y, x) of the seed; None for an empty truth."""
    truth = np.asarray(truth, dtype=bool)
    if not truth.any():
        return None
    centroid = np.asarray(ndimage.center_of_mass(truth))
    rounded = tuple(int(v) for v in np.clip(np.rint(centroid), 0, np.array(truth.shape) - 1))
    if truth[rounded]:
        return rounded
    coordinates = np.argwhere(truth)
    nearest = coordinates[int(np.argmin(((coordinates - centroid) ** 2).sum(axis=1)))]
    return tuple(int(v) for v in nearest)
