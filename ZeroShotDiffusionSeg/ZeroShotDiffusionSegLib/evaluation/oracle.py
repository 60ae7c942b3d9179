"""The partition's ceiling: the best an ideal selector could pick from the engine's segments,
with the ground truth as oracle. This is what DiffSeg's Hungarian evaluation measures
(docs/algorithms.md#evaluation-against-ground-truth); NOT what a deployed selection rule achieves; reports show both.

* ``hungarian_segment``: one segment per ground-truth class, classes {background, lesion},
  assigned to maximise the summed IoU (scipy's linear_sum_assignment, DiffSeg/PiCIE protocol);
  the prediction is the segment assigned to the lesion, if it overlaps the lesion at all.
* ``greedy_union``: starting from nothing, repeatedly add the segment that raises the IoU with
  the lesion most, until no segment raises it. Segments are disjoint, so the IoU of a union is
  computed from per-segment counts without building masks.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment


def _segment_counts(labels: np.ndarray, truth: np.ndarray):
    """Segment ids present, their sizes and their overlaps with the truth."""
    labels = np.asarray(labels)
    truth = np.asarray(truth, dtype=bool)
    if labels.shape != truth.shape:
        raise ValueError(f"labels shape {labels.shape} differs from truth shape {truth.shape}")
    ids, inverse = np.unique(labels.ravel(), return_inverse=True)
    sizes = np.bincount(inverse, minlength=ids.size)
    overlaps = np.bincount(inverse, weights=truth.ravel().astype(np.float64), minlength=ids.size).astype(np.int64)
    return ids, sizes, overlaps


def hungarian_segment(labels: np.ndarray, truth: np.ndarray) -> Tuple[np.ndarray, List[int]]:
    """(mask, [segment id]) of the segment matched to the lesion; empty if the lesion is left unmatched."""
    ids, sizes, overlaps = _segment_counts(labels, truth)
    truth = np.asarray(truth, dtype=bool)
    lesion_size = int(truth.sum())
    background_size = truth.size - lesion_size
    # IoU of each segment with each class: columns are (background, lesion).
    background_overlaps = sizes - overlaps
    iou_background = background_overlaps / np.maximum(sizes + background_size - background_overlaps, 1)
    iou_lesion = overlaps / np.maximum(sizes + lesion_size - overlaps, 1)
    rows, columns = linear_sum_assignment(np.stack([iou_background, iou_lesion], axis=1), maximize=True)
    # A segment that shares no pixel with the lesion is no match: better to predict nothing (e.g. no lesion).
    chosen = [int(ids[row]) for row, column in zip(rows, columns) if column == 1 and overlaps[row] > 0]
    return np.isin(labels, chosen), chosen


def greedy_union(labels: np.ndarray, truth: np.ndarray) -> Tuple[np.ndarray, List[int]]:
    """(mask, segment ids in the order added) of the greedy IoU-maximising union."""
    ids, sizes, overlaps = _segment_counts(labels, truth)
    lesion_size = int(np.asarray(truth, dtype=bool).sum())
    chosen: List[int] = []
    remaining = list(range(ids.size))
    union_size = union_overlap = 0
    best_iou = 0.0
    while remaining:
        candidate_overlap = union_overlap + overlaps[remaining]
        candidate_size = union_size + sizes[remaining]
        candidate_iou = candidate_overlap / np.maximum(candidate_size + lesion_size - candidate_overlap, 1)
        best = int(np.argmax(candidate_iou))
        if candidate_iou[best] <= best_iou:
            break
        index = remaining.pop(best)
        best_iou = float(candidate_iou[best])
        union_size += int(sizes[index])
        union_overlap += int(overlaps[index])
        chosen.append(int(ids[index]))
    return np.isin(labels, chosen), chosen


def per_slice_unique(labels: np.ndarray, axis: int = 0) -> np.ndarray:
    """Make the segment ids of a stack of 2-D partitions distinct between slices, so the 3-D
    oracle never merges two unrelated segments that happen to share an id in different slices."""
    labels = np.moveaxis(np.asarray(labels, dtype=np.int64), axis, 0)
    stride = int(labels.max()) + 1 if labels.size else 1
    offsets = (np.arange(labels.shape[0], dtype=np.int64) * stride).reshape((-1,) + (1,) * (labels.ndim - 1))
    return np.moveaxis(labels + offsets, 0, axis)
