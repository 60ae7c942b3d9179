"""Residuals between an image and its pseudo-healthy counterfactual, and the refined lesion mask.

Rule (docs/algorithms.md#pseudo-healthy-refinement), per image, in the region R = candidate grown by ``dilation_mm``:
1. Pixel residual: |input - healthy| (grey mean for colour), both in the [0, 1] window the model saw,
   divided by its 99th percentile inside R and clipped to [0, 1] (a percentile, not the maximum, so
   one odd pixel does not flatten the rest); a map whose largest change is under one grey level
   (1/255) counts as no change (all 0).
2. Feature residual: 1 - cosine similarity of the VAE encoder features of input and healthy image
   (``pseudo_healthy.FEATURE_DOWN_BLOCKS``), upsampled, normalised inside R the same way (no change
   under a cosine distance of 1e-3).
3. Fused residual = 0.5 pixel + 0.5 feature, in [0, 1]; 0 outside R.
4. Refined lesion: fused residual above Otsu's threshold of its values inside R, inside R, and only
   the face-connected pieces that share at least one pixel with the candidate. A counterfactual
   that changes nothing (residual constant in R) gives an empty mask.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..otsu import otsu_threshold
from .healthy_params import PseudoHealthyParams

PIXEL_WEIGHT = 0.5
NORMALISING_PERCENTILE = 99.0
# Changes smaller than these are round-off, not residual: one grey level of an 8-bit display, and a
# cosine distance of 1e-3 (identical inputs give ~1e-7 through float arithmetic).
SMALLEST_PIXEL_CHANGE = 1.0 / 255.0
SMALLEST_FEATURE_CHANGE = 1e-3
RULE = ("fused residual = 0.5 pixel + 0.5 VAE-feature residual, each / its 99th percentile inside the candidate grown by "
        "dilation_mm; refined lesion = above Otsu inside that region, face-connected pieces overlapping the candidate")


@dataclass
class Refinement:
    """One image's counterfactual: all arrays at the image's size."""

    region: np.ndarray  # bool: the candidate grown by the dilation (what was repainted)
    healthy: np.ndarray  # float32 [0, 1], the image's layout; equals the input outside ``region``
    residual: np.ndarray  # float32 [0, 1], the fused residual; 0 outside ``region``
    mask: np.ndarray  # bool: the refined lesion


def dilate_mm(mask: np.ndarray, dilation_mm: float, spacing: Tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Pixels within ``dilation_mm`` (Euclidean, physical) of the mask; ``spacing`` = (row, column) mm."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any() or dilation_mm <= 0:
        return mask.copy()
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= dilation_mm


def normalise_inside(values: np.ndarray, region: np.ndarray, smallest_change: float) -> np.ndarray:
    """``values`` / their 99th percentile inside ``region``, clipped to [0, 1]; 0 outside the region.
    A map whose largest value in the region is below ``smallest_change`` is all 0: round-off is not
    stretched into a residual."""
    out = np.zeros(values.shape, dtype=np.float32)
    inside = values[region]
    if inside.size == 0 or float(inside.max()) < smallest_change:
        return out
    scale = max(float(np.percentile(inside, NORMALISING_PERCENTILE)), smallest_change)
    out[region] = np.clip(inside / scale, 0.0, 1.0)
    return out


def grey(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=2) if image.ndim == 3 else image


def fused_residual(image: np.ndarray, healthy: np.ndarray, feature_distance: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Rule steps 1-3: the fused residual map in [0, 1]."""
    pixel = normalise_inside(np.abs(grey(image).astype(np.float32) - grey(healthy).astype(np.float32)), region,
                             SMALLEST_PIXEL_CHANGE)
    feature = normalise_inside(np.asarray(feature_distance, dtype=np.float32), region, SMALLEST_FEATURE_CHANGE)
    return (PIXEL_WEIGHT * pixel + (1.0 - PIXEL_WEIGHT) * feature).astype(np.float32)


def refine_mask(residual: np.ndarray, region: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Rule step 4: Otsu inside the region, pieces that overlap the candidate."""
    inside = residual[region]
    if inside.size == 0 or float(inside.max()) <= float(inside.min()):
        return np.zeros(residual.shape, dtype=bool)
    above = (residual > otsu_threshold(inside)) & region
    pieces, _ = ndimage.label(above)
    kept = np.unique(pieces[candidate & above])
    return np.isin(pieces, kept[kept > 0])


def refine_batch(
    inpainter,
    images: Sequence[np.ndarray],
    candidates: Sequence[np.ndarray],
    keys: Sequence[int],
    params: PseudoHealthyParams,
    normal_prompt: str,
    negative_prompt: str = "",
    spacing: Tuple[float, float] = (1.0, 1.0),
    cancel: Optional[threading.Event] = None,
    on_step: Optional[Callable] = None,
) -> List[Refinement]:
    """Repaint every image's grown candidate with ``inpainter`` (``repaint`` and ``feature_distance``, as
    ``PseudoHealthyInpainter``) and refine each candidate from the residuals. Images: [0, 1] floats."""
    regions = [dilate_mm(candidate, params.dilation_mm, spacing) for candidate in candidates]
    healthy = inpainter.repaint(images, regions, keys, normal_prompt, negative_prompt, params, cancel=cancel, on_step=on_step)
    distances = inpainter.feature_distance(images, healthy)
    results = []
    for image, candidate, region, repainted, distance in zip(images, candidates, regions, healthy, distances):
        residual = fused_residual(image, repainted, distance, region)
        results.append(Refinement(region, repainted, residual, refine_mask(residual, region, candidate)))
    return results
