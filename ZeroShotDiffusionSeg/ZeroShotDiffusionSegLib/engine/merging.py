"""Self-attention aggregation and iterative KL merging with the reference semantics of
google/diffseg @ 77ea596 (``segmentor.py``), as pinned down in docs/algorithms.md#attention-merging.

Deliberate differences from the reference, all numerical: the KL is evaluated in fp32
with an epsilon (the reference uses fp16, which underflows), iteration 1 is two
matrix products instead of a 4-D broadcast, and the final label ids are made contiguous.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F

from ..progress import check_active_cancel

KL_EPSILON = 1e-10
# Upsampling 256 proposals at once to 512x512 in fp32 would take 268 MB; chunks keep it small.
_UPSAMPLE_CHUNK = 32


def resolution_weights(sides) -> Dict[int, float]:
    """w_r = r / sum(r): the reference's proportional weights (0.533, 0.267, 0.133, 0.067 for SD)."""
    total = float(sum(sides))
    return {side: side / total for side in sides}


def _query_tiling_index(finest: int, side: int, device) -> torch.Tensor:
    """For every query pixel of the finest grid, the index of the coarse query it copies (nearest tiling)."""
    factor = finest // side
    rows = torch.arange(finest, device=device) // factor
    return (rows[:, None] * side + rows[None, :]).reshape(-1)


def aggregate_self_attention(self_attn: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """Aggregate per-resolution attention into one (L², L²) fp32 matrix whose rows sum to 1.

    ``self_attn`` maps a latent side r to a (heads, r², r²) tensor (layers already averaged).
    Key axis: bilinear upsampling by L/r and renormalisation; query axis: nearest tiling.
    """
    if not self_attn:
        raise ValueError("no self-attention maps given")
    sides = sorted(self_attn, reverse=True)
    finest = sides[0]
    weights = resolution_weights(sides)
    aggregated: Optional[torch.Tensor] = None
    for side in sides:
        attn = self_attn[side]
        tokens = side * side
        if attn.dim() != 3 or attn.shape[1:] != (tokens, tokens):
            raise ValueError(f"attention at side {side} must have shape (heads, {tokens}, {tokens}), got {tuple(attn.shape)}")
        if finest % side:
            raise ValueError(f"side {side} does not divide the finest side {finest}")
        maps = attn.float().mean(0)
        factor = finest // side
        if factor > 1:
            maps = F.interpolate(maps.reshape(tokens, 1, side, side), scale_factor=factor, mode="bilinear", align_corners=False)
            maps = maps.reshape(tokens, finest * finest)
        maps = maps / maps.sum(1, keepdim=True)
        if factor > 1:
            maps = maps[_query_tiling_index(finest, side, maps.device)]
        maps = maps * weights[side]
        aggregated = maps if aggregated is None else aggregated.add_(maps)
    return aggregated


def anchor_grid(side: int, points: int, device=None) -> torch.Tensor:
    """Flat query indices of the reference's M x M anchor grid (1, 5, ..., 61 for side 64, M 16), row-major."""
    if not 1 <= points <= side:
        raise ValueError(f"grid points must be in 1..{side}, got {points}")
    step = (side - 1) // (points - 1) if points > 1 else 0
    start = (side - 1 - step * (points - 1)) // 2
    coords = start + step * torch.arange(points, device=device)
    return (coords[:, None] * side + coords[None, :]).reshape(-1)


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """D[i, j] = ½ KL(p_i‖q_j) + ½ KL(q_j‖p_i) for rows of p (a, n) and q (b, n), as matrix products."""
    log_p = p.clamp_min(KL_EPSILON).log()
    log_q = q.clamp_min(KL_EPSILON).log()
    self_p = (p * log_p).sum(1)
    self_q = (q * log_q).sum(1)
    return 0.5 * (self_p[:, None] + self_q[None, :] - p @ log_q.T - log_p @ q.T)


def _merge_anchors(aggregated: torch.Tensor, anchors: torch.Tensor, threshold: float) -> torch.Tensor:
    """Iteration 1: each anchor becomes the mean of every pixel's map within KL threshold of it."""
    close = (symmetric_kl(aggregated[anchors], aggregated) < threshold).float()
    # D(a, a) = 0 < tau in exact arithmetic; fp32 round-off must not leave an anchor without itself.
    close[torch.arange(len(anchors), device=close.device), anchors] = 1.0
    return (close @ aggregated) / close.sum(1, keepdim=True)


def _merge_proposals(proposals: torch.Tensor, threshold: float) -> torch.Tensor:
    """Iterations 2..N: greedy in list order; an unmatched proposal absorbs every proposal close to it
    (matched ones included, as the reference does)."""
    close = (symmetric_kl(proposals, proposals) < threshold).cpu()
    close.fill_diagonal_(True)
    matched = torch.zeros(len(proposals), dtype=torch.bool)
    groups = []
    for index in range(len(proposals)):
        if matched[index]:
            continue
        groups.append(close[index])
        matched |= close[index]
    membership = torch.stack(groups).to(proposals.device, proposals.dtype)
    return (membership @ proposals) / membership.sum(1, keepdim=True)


def _kmeans_refine(aggregated: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
    """Optional reference refinement: K-means over all pixel maps, initialised at the proposals."""
    from sklearn.cluster import KMeans

    data = aggregated.cpu().double().numpy()
    kmeans = KMeans(n_clusters=len(proposals), init=proposals.cpu().double().numpy(), n_init=1).fit(data)
    assignment = torch.as_tensor(kmeans.labels_, device=aggregated.device)
    clusters = [aggregated[assignment == k].mean(0) for k in assignment.unique()]
    return torch.stack(clusters)


def proposals_to_labels(proposals: torch.Tensor, finest: int, output_size: int) -> torch.Tensor:
    """Bilinear upsampling of every proposal to the output size, then the per-pixel argmax ("NMS")."""
    best_value = None
    best_index = None
    for start in range(0, len(proposals), _UPSAMPLE_CHUNK):
        chunk = proposals[start:start + _UPSAMPLE_CHUNK].reshape(-1, 1, finest, finest)
        upsampled = F.interpolate(chunk, size=(output_size, output_size), mode="bilinear", align_corners=False)[:, 0]
        value, index = upsampled.max(0)
        index = index + start
        if best_value is None:
            best_value, best_index = value, index
        else:
            better = value > best_value
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index, best_index)
    # Proposals that win no pixel leave gaps in the ids; contiguous ids are what callers count on.
    return torch.unique(best_index, return_inverse=True)[1].to(torch.int64)


def segment_self_attention(
    self_attn: Mapping[int, torch.Tensor],
    kl_threshold: float = 1.1,
    grid_points: int = 16,
    iterations: int = 3,
    refine: bool = False,
    output_size: Optional[int] = None,
) -> torch.Tensor:
    """DiffSeg's unsupervised partition from per-resolution self-attention.

    ``self_attn`` maps the latent side (64, 32, 16, 8 for SD at 512 px) to (heads, N, N) with N = side².
    Returns an int64 label map of ``output_size`` (default 8 x the finest side: (512, 512) for SD) with
    contiguous ids 0..K-1, on the input's device.
    """
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    with torch.no_grad():
        aggregated = aggregate_self_attention(self_attn)
        finest = max(self_attn)
        anchors = anchor_grid(finest, grid_points, aggregated.device)
        proposals = _merge_anchors(aggregated, anchors, kl_threshold)
        for _ in range(iterations - 1):
            check_active_cancel()
            proposals = _merge_proposals(proposals, kl_threshold)
        if refine:
            proposals = _kmeans_refine(aggregated, proposals)
        return proposals_to_labels(proposals, finest, output_size or 8 * finest)
