"""Regions -> LiteMedSAM prompts: a box per connected piece, padded by a margin, and interior points.

Boxes are (x0, y0, x1, y1) in pixels, inclusive, x = column, as ``refine_boundaries`` takes them.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

# Per side, a fraction of the piece's width/height. An attention region is drawn on an 8-pixel
# grid (64×64 upsampled to 512), so its outline can fall a few pixels inside the lesion; SAM
# draws the outline inside its box, so a little slack costs less than a box cut into the lesion.
BOX_MARGIN = 0.05
MIN_PIECE_PIXELS = 16  # smaller pieces are attention noise, not a lesion SAM could outline
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

Box = Tuple[int, int, int, int]


def pad_box(box, margin: float, shape: Tuple[int, int]) -> Box:
    """The box grown by ``margin`` × its width/height on each side (at least one pixel when margin > 0), clipped to the image."""
    x0, y0, x1, y1 = box
    dx = max(1, round(margin * (x1 - x0 + 1))) if margin > 0 else 0
    dy = max(1, round(margin * (y1 - y0 + 1))) if margin > 0 else 0
    height, width = shape
    return (max(0, x0 - dx), max(0, y0 - dy), min(width - 1, x1 + dx), min(height - 1, y1 + dy))


def tight_box(mask: np.ndarray) -> Optional[Box]:
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def pieces(mask: np.ndarray, min_pixels: int = MIN_PIECE_PIXELS) -> List[np.ndarray]:
    """The mask's 8-connected pieces of at least ``min_pixels``, largest first."""
    labelled, count = ndimage.label(np.asarray(mask, dtype=bool), structure=_EIGHT_CONNECTED)
    if count == 0:
        return []
    sizes = np.bincount(labelled.ravel())[1:]
    order = [int(i) + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_pixels]
    return [labelled == label for label in order]


def boxes_for_mask(mask: np.ndarray, margin: float = BOX_MARGIN, min_pixels: int = MIN_PIECE_PIXELS) -> List[Box]:
    """One padded box per piece of the mask."""
    shape = np.asarray(mask).shape[:2]
    return [pad_box(tight_box(piece), margin, shape) for piece in pieces(mask, min_pixels)]


def interior_point(mask: np.ndarray) -> Tuple[int, int]:
    """(x, y) of the mask pixel farthest from its outline: a point surely inside a crescent or a ring."""
    distance = ndimage.distance_transform_edt(np.pad(np.asarray(mask, dtype=bool), 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(col), int(row)


def best_score_point(mask: np.ndarray, score: np.ndarray) -> Tuple[int, int]:
    """(x, y) of the highest score inside the mask (the first in raster order on ties)."""
    masked = np.where(np.asarray(mask, dtype=bool), score, -np.inf)
    row, col = np.unravel_index(int(np.argmax(masked)), masked.shape)
    return int(col), int(row)


def selection_prompts(mask: np.ndarray, score: Optional[np.ndarray] = None, seeds: Sequence[Tuple[int, int]] = (),
                      score_points: bool = False, box: Optional[Box] = None):
    """(boxes, points) that hand one slice's selection to LiteMedSAM.

    One box per piece of ``mask`` (padded by ``BOX_MARGIN``), or the single fixed ``box`` (a user's
    ROI). Points, per box: every seed (x, y) inside the piece (or the box) is positive; with
    ``score_points``, the piece's highest-score pixel is positive and the highest-score pixel of
    every other piece inside this box is negative. LiteMedSAM was trained on boxes alone and
    measured worse with points (benchmarks/README.md), so score points are off by default."""
    shape = np.asarray(mask).shape[:2]
    regions = pieces(mask)
    if box is not None:
        regions, boxes = [np.ones(shape, dtype=bool)], [box]
    else:
        boxes = [pad_box(tight_box(piece), BOX_MARGIN, shape) for piece in regions]
    points: List[List[Tuple[int, int, bool]]] = []
    for index, (piece, piece_box) in enumerate(zip(regions, boxes)):
        x0, y0, x1, y1 = piece_box
        own = [(int(x), int(y), True) for x, y in seeds if piece[int(y), int(x)] and (box is None or (x0 <= x <= x1 and y0 <= y <= y1))]
        if score_points and score is not None and box is None:
            own.append((*best_score_point(piece, score), True))
            for other_index, other in enumerate(regions):
                if other_index != index:
                    x, y = best_score_point(other, score)
                    if x0 <= x <= x1 and y0 <= y <= y1:
                        own.append((x, y, False))
        points.append(own)
    return boxes, points


def refine_selections(refiner, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                      scores: Optional[Sequence[Optional[np.ndarray]]] = None,
                      seeds: Optional[Sequence[Sequence[Tuple[int, int]]]] = None,
                      score_points: bool = False, box: Optional[Box] = None) -> List[np.ndarray]:
    """Each image's selection redrawn by LiteMedSAM: the union of its boxes' masks. An image whose
    selection is empty stays empty (and is not encoded), unless a fixed ``box`` is given."""
    all_boxes, all_points = [], []
    for index, mask in enumerate(masks):
        if box is None and not np.asarray(mask).any():
            all_boxes.append([])
            all_points.append([])
            continue
        boxes, points = selection_prompts(mask, scores[index] if scores is not None else None,
                                          seeds[index] if seeds is not None else (), score_points, box)
        all_boxes.append(boxes)
        all_points.append(points)
    refined = refiner.refine_many(images, all_boxes, all_points)
    out = []
    for mask, image_masks in zip(masks, refined):
        mask = np.asarray(mask, dtype=bool)
        union = np.zeros(mask.shape[:2], dtype=bool)
        for piece_mask in image_masks:
            union |= piece_mask
        if box is None:  # pieces too small for a box are kept as they were selected
            boxed = np.zeros_like(union)
            for piece in pieces(mask):
                boxed |= piece
            union |= mask & ~boxed
        out.append(union)
    return out
