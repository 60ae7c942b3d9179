"""Attention capture: a diffusers attention processor that computes the same output as the
stock one while averaging the self-attention probabilities over heads into a per-resolution store
and keeping the cross-attention layers' queries, so that prompts can be applied after the pass
(``prompt_maps``).

Stock processors (SDPA, xformers) never materialise the probabilities, so capture needs an
explicit softmax (docs/algorithms.md#attention-capture). Probabilities are computed in blocks of query rows and
their head-mean is added in place to one fp32 sum per resolution: holding every head of a 64x64
layer would cost 8 x 4096² x 4 B = 537 MB per image, and writing it out to memory and reading it
back per head would cost more time than the matrix products themselves.
"""

from __future__ import annotations

import math
from collections import Counter
from contextlib import contextmanager
from typing import Dict, Sequence

import torch

# Query rows per block are chosen so that one block of scores holds about this many floats. On a CPU,
# 4 MB blocks stay in cache (measured on SD 1.5's 64x64 layers: 32 rows 150 ms, 128 rows 300 ms per
# layer); a GPU prefers fewer, larger kernels.
_BLOCK_ELEMENTS_CPU = 1024 * 1024
_BLOCK_ELEMENTS_CUDA = 64 * 1024 * 1024


class AttentionStore:
    """What one pass leaves behind, for every image of a batch.

    Self-attention: running sums of the head-averaged probabilities, side -> (B, N, N).
    Cross-attention: the queries (after ``to_q``, per head, fp16) of every layer whose latent side
    is in ``query_sides``, layer name -> (B, heads, N, head_dim); a prompt's keys are applied to
    them later. Nothing is kept for cross-attention when ``query_sides`` is empty.
    """

    def __init__(self, query_sides: Sequence[int] = ()):
        self.query_sides = set(query_sides)
        self._self_sum: Dict[int, torch.Tensor] = {}
        self.queries: Dict[str, torch.Tensor] = {}
        self.self_layers: Counter = Counter()
        self.cross_layers: Counter = Counter()

    def accumulator(self, side: int, shape, device) -> torch.Tensor:
        """The fp32 running sum that one more self-attention layer at ``side`` adds its head-mean into."""
        if side not in self._self_sum:
            self._self_sum[side] = torch.zeros(shape, dtype=torch.float32, device=device)
        self.self_layers[side] += 1
        return self._self_sum[side]

    def keep_query(self, layer: str, side: int, query: torch.Tensor) -> None:
        self.cross_layers[side] += 1
        if side in self.query_sides:
            self.queries[layer] = query.to(torch.float16)

    def self_attention(self) -> Dict[int, torch.Tensor]:
        """side -> (B, N, N), averaged over the layers of that resolution (rows sum to 1)."""
        return {side: total / self.self_layers[side] for side, total in self._self_sum.items()}


class CapturingAttnProcessor:
    """Drop-in for diffusers' ``AttnProcessor2_0`` (same call signature and output) that records
    head-averaged probabilities into an ``AttentionStore``."""

    def __init__(self, store: AttentionStore, layer: str = ""):
        self.store = store
        self.layer = layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        is_cross = encoder_hidden_states is not None
        batch_size, sequence_length, _ = (encoder_hidden_states if is_cross else hidden_states).shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if not is_cross:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if is_cross:
            self.store.keep_query(self.layer, _side(query.shape[2]), query)
        hidden_states = self._attend(query, key, value, attention_mask, attn.scale, is_cross)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _attend(self, query, key, value, attention_mask, scale, is_cross):
        """softmax(QKᵀ·scale)·V in fp32, blocked over query rows so that a block of all heads' probabilities
        stays in cache; for self-attention each block's head-mean is added straight into the store."""
        batch, heads, tokens, _ = query.shape
        keys = key.shape[2]
        target = None if is_cross else self.store.accumulator(_side(tokens), (batch, tokens, keys), query.device)
        # Scaling Q once saves a pass over every block of scores; a contiguous Kᵀ makes each product faster.
        query = query.float() * scale
        key_t = key.float().transpose(-1, -2).contiguous()
        value = value.float()
        output = torch.empty((batch, heads, tokens, value.shape[-1]), dtype=torch.float32, device=query.device)
        budget = _BLOCK_ELEMENTS_CUDA if query.device.type == "cuda" else _BLOCK_ELEMENTS_CPU
        # Blocks are per image: dividing the budget by the batch would shrink them to a few rows at batch 4+.
        rows = max(1, budget // (heads * keys))
        for image in range(batch):
            for start in range(0, tokens, rows):
                block = slice(start, start + rows)
                scores = torch.matmul(query[image, :, block], key_t[image])
                if attention_mask is not None:
                    mask = attention_mask[image]
                    scores += mask if mask.shape[1] == 1 else mask[:, block]
                probs = scores.softmax(dim=-1)
                output[image, :, block] = torch.matmul(probs, value[image])
                if target is not None:
                    target[image, block].add_(probs.sum(dim=0), alpha=1.0 / heads)
        return output


def _side(tokens: int) -> int:
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"attention over {tokens} query tokens is not a square latent; capture needs square inputs")
    return side


@contextmanager
def capture_attention(unet, store: AttentionStore):
    """Install capturing processors on every attention layer of ``unet`` for one pass; the original
    processors are restored afterwards, also when the pass raises."""
    original = unet.attn_processors
    unet.set_attn_processor({name: CapturingAttnProcessor(store, name) for name in original})
    try:
        yield store
    finally:
        unet.set_attn_processor(original)
