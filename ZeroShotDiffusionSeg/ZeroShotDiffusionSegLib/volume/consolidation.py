"""Per-slice results -> numbered 3-D lesions, and the lesion table.

Rules (also in docs/algorithms.md#consolidation-in-3-d):
- Prompt mode: a voxel is selected when its volume-normalised score (raw segment score / the
  highest raw score anywhere in the volume) is >= the selection threshold; lesions are the 3-D
  connected components (face-connected) of the selected voxels, so every lesion's mean score
  clears the threshold too. Normalising over the volume, not per slice, keeps a slice without a
  tumour from promoting its most prompt-like region to "tumour".
- Seed mode: see ``select_overlapping_segments`` and ``propagate_from_seed``.
- Components smaller than the minimum physical volume are dropped; the rest are numbered 1..K by
  decreasing size (ties: the one whose first voxel comes first in memory order).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

from ..errors import UserError
from .geometry import continuous_index_to_physical, lps_to_ras

# Seed mode works on "pieces": the 2-D connected parts of the engine's regions (a DiffSeg region may
# also cover look-alike tissue elsewhere in the slice, which a click on one lesion does not ask for).
# A neighbour-slice piece continues the lesion when at least this fraction of it lies inside the
# previous slice's mask ...
CONTAINED_FRACTION = 0.5
# ... or when it covers at least this fraction of the previous mask without being more than
# GROWTH_LIMIT times its area (so a lesion may grow between slices, but the background may not join).
COVERED_FRACTION = 0.5
GROWTH_LIMIT = 4.0

RULES = {
    "prompt": "voxels whose score (raw segment score / volume maximum) >= selection_threshold; 3-D face-connected components",
    "seed": "the connected piece of the region under the seed on its slice, then per neighbouring slice the connected "
    "region pieces that are at least half inside the previous mask, or cover at least half of it while at most 4x its "
    "area; 3-D face-connected components",
}

LESION_COLUMNS = [
    "id", "voxels", "volume_ml", "longest_axial_diameter_mm",
    "centroid_ras_x", "centroid_ras_y", "centroid_ras_z",
    "centroid_lps_x", "centroid_lps_y", "centroid_lps_z",
    "mean_score",
]


def prompt_selection(score: np.ndarray, threshold: float, segmented: np.ndarray) -> np.ndarray:
    """Voxels of segmented slices whose volume-normalised score clears the threshold."""
    return (score >= np.float32(threshold)) & segmented


def connected_pieces(labels: np.ndarray) -> np.ndarray:
    """The 2-D face-connected parts of every region of a partition, numbered 1..N (every pixel has one)."""
    pieces = np.zeros(labels.shape, dtype=np.int32)
    next_id = 0
    for region in np.unique(labels):
        components, count = ndimage.label(labels == region)
        inside = components > 0
        pieces[inside] = components[inside] + next_id
        next_id += count
    return pieces


def select_overlapping_segments(labels: np.ndarray, previous_mask: np.ndarray) -> np.ndarray:
    """The segments (pieces, in seed mode) of a slice that continue the previous slice's mask (see module rules)."""
    previous_area = int(previous_mask.sum())
    if previous_area == 0:
        return np.zeros(labels.shape, dtype=bool)
    flat_labels = labels.reshape(-1)
    segment_sizes = np.bincount(flat_labels)
    overlaps = np.bincount(flat_labels[previous_mask.reshape(-1)], minlength=segment_sizes.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        contained = overlaps >= CONTAINED_FRACTION * segment_sizes
        covering = (overlaps >= COVERED_FRACTION * previous_area) & (segment_sizes <= GROWTH_LIMIT * previous_area)
    chosen = (overlaps > 0) & (contained | covering)
    return chosen[labels]


def propagate_from_seed(
    seed_slice: int,
    seed_pixel: Tuple[int, int],
    slice_order: Sequence[int],
    fetch_labels: Callable[[List[int]], Dict[int, np.ndarray]],
    chunk: int,
) -> Dict[int, np.ndarray]:
    """Masks per slice index, grown from the seed's piece to neighbouring slices by overlap of pieces.

    ``slice_order`` is the run of consecutive segmentable slices containing the seed slice;
    propagation stops at its ends or at the first slice where nothing continues the mask.
    ``fetch_labels`` returns the engine's partition for a list of slice indices (cached by the
    caller), asked for ``chunk`` slices at a time so the engine still runs in batches.
    """
    x, y = seed_pixel
    seed_pieces = connected_pieces(fetch_labels([seed_slice])[seed_slice])
    masks = {seed_slice: seed_pieces == seed_pieces[y, x]}
    start = list(slice_order).index(seed_slice)
    for step in (+1, -1):
        previous = masks[seed_slice]
        cursor = start + step
        while previous.any() and 0 <= cursor < len(slice_order):
            run = [slice_order[c] for c in range(cursor, cursor + step * chunk, step) if 0 <= c < len(slice_order)]
            partitions = fetch_labels(run)
            for index in run:
                previous = select_overlapping_segments(connected_pieces(partitions[index]), previous)
                if not previous.any():
                    break
                masks[index] = previous
            cursor += step * len(run)
    return masks


def number_lesions(
    mask: np.ndarray, voxel_volume_mm3: float, min_volume_mm3: float = 0.0
) -> Tuple[np.ndarray, int]:
    """(uint16 labels 1..K by decreasing size, number of components dropped as too small)."""
    components, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=np.uint16), 0
    sizes = np.bincount(components.reshape(-1), minlength=count + 1)[1:]
    kept = np.flatnonzero(sizes * voxel_volume_mm3 >= min_volume_mm3)
    if kept.size > np.iinfo(np.uint16).max:
        raise UserError(
            f"{kept.size} separate lesions found, more than labels.nrrd can number (65535); "
            "raise --min-volume or --selection-threshold, or give an ROI"
        )
    # ndimage.label numbers components in raster order of their first voxel, so sorting ties by
    # component number breaks them by first voxel.
    order = kept[np.lexsort((kept, -sizes[kept]))]
    lookup = np.zeros(count + 1, dtype=np.uint16)
    lookup[order + 1] = np.arange(1, order.size + 1, dtype=np.uint16)
    return lookup[components], int(count - kept.size)


def _longest_in_plane_distance(points_ij: np.ndarray, to_mm: np.ndarray) -> float:
    """Largest distance (mm) between voxel centres; points are 2-D index offsets, to_mm maps them to mm (3x2)."""
    if len(points_ij) < 2:
        return 0.0
    if len(points_ij) > 64:
        try:  # the farthest pair lies on the convex hull, and a linear map keeps hull vertices
            points_ij = points_ij[ConvexHull(points_ij).vertices]
        except Exception:  # noqa: BLE001 - collinear points: qhull refuses; fall back to all points
            pass
    return float(pdist(points_ij @ to_mm.T).max())


def _longest_axial_diameter(lesion: np.ndarray, to_mm: np.ndarray, numpy_axis: int) -> float:
    """Longest distance (mm) between two voxel centres of a boolean lesion crop lying in one axial slice."""
    longest = 0.0
    for position in range(lesion.shape[numpy_axis]):
        plane = np.take(lesion, position, axis=numpy_axis)
        if not plane.any():
            continue
        rows, cols = np.nonzero(plane & ~ndimage.binary_erosion(plane))  # the farthest pair lies on the edge
        # Plane axes in numpy order are the in-plane ITK axes in decreasing order: columns first.
        longest = max(longest, _longest_in_plane_distance(np.stack([cols, rows], axis=1).astype(float), to_mm))
    return longest


def _rounded(value: float, digits: int) -> float:
    """``round``, with -0.0 (a small negative number, or RAS of LPS 0) written as 0.0."""
    return round(float(value), digits) + 0.0


def lesion_table(labels: np.ndarray, score: np.ndarray, image: sitk.Image, axial_axis: int) -> List[dict]:
    """One row per lesion, the columns of lesions.csv (values rounded to fixed decimals, so the CSV is stable).

    Each lesion is measured inside its bounding box only, so the cost follows the lesions, not the volume.
    """
    count = int(labels.max()) if labels.size else 0
    columns = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())  # index step -> mm
    to_mm = columns[:, [a for a in range(3) if a != axial_axis]]
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    rows = []
    for lesion, box in enumerate(ndimage.find_objects(labels, max_label=count), start=1):
        if box is None:
            continue
        inside = labels[box] == lesion
        n = int(inside.sum())
        offset_kji = np.array([part.start for part in box], dtype=float)
        centre_kji = np.array([axis.mean() for axis in np.nonzero(inside)]) + offset_kji
        lps = continuous_index_to_physical(image, centre_kji[::-1])
        ras = lps_to_ras(lps)
        rows.append({
            "id": lesion,
            "voxels": n,
            "volume_ml": round(n * voxel_ml, 6),
            "longest_axial_diameter_mm": round(_longest_axial_diameter(inside, to_mm, 2 - axial_axis), 2),
            "centroid_ras_x": _rounded(ras[0], 2), "centroid_ras_y": _rounded(ras[1], 2), "centroid_ras_z": _rounded(ras[2], 2),
            "centroid_lps_x": _rounded(lps[0], 2), "centroid_lps_y": _rounded(lps[1], 2), "centroid_lps_z": _rounded(lps[2], 2),
            "mean_score": round(float(score[box][inside].mean(dtype=np.float64)), 4),
        })
    return rows
