"""Anomaly-aware prompt scores: the abnormal prompt's map against its normal counterpart's.

A diffusion model trained on photographs answers every medical word a little, so the raw map of
"liver tumor" is high over the whole liver. Contrasting it with "healthy liver" (DiffuGTS's
anomaly-aware attention, here without training) keeps what the tumour prompt claims more than the
healthy-organ prompt does. Per pixel, over the two prompt maps P_a (abnormal) and P_n (normal):

    anomaly(x) = softmax(log P_a(x) / T, log P_n(x) / T)[abnormal] = P_a^(1/T) / (P_a^(1/T) + P_n^(1/T))

The maps are probabilities, so their logarithms are the natural logits. T = 1 (the default) gives
the share of the two prompts' attention that goes to the abnormal one: 0.5 where they tie, free of
the maps' absolute scale (which changes with the model and the number of tokens), so no value has
to be tuned per model. T < 1 sharpens the contrast, T > 1 softens it.
"""

from __future__ import annotations

import torch

DEFAULT_TEMPERATURE = 1.0
_FLOOR = 1e-12  # attention probabilities are never 0 in exact arithmetic; fp32 can underflow


def anomaly_map(abnormal: torch.Tensor, normal: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """Per-pixel anomaly score in (0, 1) from two prompt maps of the same shape (the rule above)."""
    logits = torch.stack([abnormal.double().clamp_min(_FLOOR).log(), normal.double().clamp_min(_FLOOR).log()])
    return (logits / temperature).softmax(dim=0)[0].float()
