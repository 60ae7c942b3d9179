"""Choosing the foreground among the unsupervised segments: by text prompt or by seed points.

Prompt rule (documented in docs/algorithms.md#selecting-regions, tested in test_engine_selection.py):
1. Prompt map P(x): cross-attention probability of the prompt's content tokens (no BOS/EOS/padding),
   averaged over heads and layers, each resolution upsampled bilinearly to the label map's size and
   averaged with equal weights (DiffSeg's semantic labelling), then averaged over the content tokens. The probabilities
   come from the unconditional pass's queries and the prompt's keys (prompt_maps.py).
2. Segment score s_k = mean of P -- or, with a normal prompt, of the anomaly score (anomaly.py) -- over
   the segment's pixels that come from the image (not padding).
3. soft(x) = s_k / max_j s_j for x in segment k, in [0, 1]; the foreground is every segment with
   soft >= selection_threshold (default 0.5): the best-matching segment always, plus any segment at
   least half as prompt-like. Thresholding the soft map re-creates the selection exactly, so a viewer
   can move the threshold without re-running the model.
Seed rule: the segment(s) under the given pixels.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError


def prompt_attention_map(cross_attn: Dict[int, torch.Tensor], output_size: int) -> torch.Tensor:
    """Per-pixel prompt attention (output_size, output_size) from one image's side -> (N, T) maps."""
    if not cross_attn:
        raise ValueError("no cross-attention maps captured: did the pass run with the prompt's tokens?")
    total = None
    for side, maps in cross_attn.items():
        tokens = maps.shape[-1]
        grid = maps.float().T.reshape(tokens, 1, side, side)
        upsampled = F.interpolate(grid, size=(output_size, output_size), mode="bilinear", align_corners=False)
        resolution_map = upsampled.mean(dim=(0, 1))
        total = resolution_map if total is None else total + resolution_map
    return total / len(cross_attn)


def segment_scores(labels: torch.Tensor, prompt_map: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean prompt attention of every segment over its valid (non-padding) pixels; 0 for none."""
    count = int(labels.max()) + 1
    flat_labels = labels[valid].reshape(-1).cpu()
    sums = torch.bincount(flat_labels, weights=prompt_map[valid].reshape(-1).double().cpu(), minlength=count)
    pixels = torch.bincount(flat_labels, minlength=count).double()
    return torch.where(pixels > 0, sums / pixels.clamp_min(1), torch.zeros_like(sums)).float()


def select_by_prompt(labels: np.ndarray, scores: np.ndarray, threshold: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score_map, soft, mask) at the labels' size from per-segment scores (the rule above)."""
    scores = np.asarray(scores, dtype=np.float32)
    score_map = scores[labels]
    best = float(scores.max()) if scores.size else 0.0
    soft = (score_map / best).astype(np.float32) if best > 0 else np.zeros_like(score_map)
    return score_map, soft, soft >= threshold


def validate_seeds(seeds: Sequence[Tuple[int, int]], width: int, height: int) -> None:
    for x, y in seeds:
        if not (0 <= x < width and 0 <= y < height):
            raise UserError(f"seed ({x},{y}) is outside the image ({width}x{height} pixels; x is the column, y the row)")


def select_by_seeds(labels: np.ndarray, seeds: Sequence[Tuple[int, int]]) -> np.ndarray:
    """Union of the segments under the seed pixels (x = column, y = row)."""
    validate_seeds(seeds, labels.shape[1], labels.shape[0])
    return np.isin(labels, [labels[int(y), int(x)] for x, y in seeds])
