"""Prompt maps from the queries of the unconditional pass.

The UNet runs once per slice with the empty prompt (DiffSeg's setting for the self-attention
partition). During that pass every cross-attention layer coarser than the latent keeps its queries
(after ``to_q``, per head, fp16): a ``SliceState`` holds them with the slice's merged partition. A
prompt is applied afterwards, as the layer itself would apply it: the prompt is encoded once, each
layer's ``to_k`` turns it into keys, and softmax(Q·Kᵀ·scale) over the 77 tokens gives the layer's
attention to every token. The content tokens' columns are kept and aggregated by
``selection.prompt_attention_map``. Any number of prompts reuse one pass, and a fresh run takes
this same path, so a re-prompt from cached states is identical to a fresh run with that prompt.

Why not the finest (64x64 at 512 px) layers: their queries are 57 % of the state (SD 1.5 at 512 px:
22.0 MiB of queries per slice with them, 9.5 MiB without) and, with two prompts, most of the re-prompt time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch

PROMPT_MAP_RULE = (
    "prompt maps come from the unconditional (empty-prompt) pass: the prompt's keys (each layer's to_k) "
    "against the queries kept from that pass, softmax over the 77 tokens, content tokens kept; "
    "cross-attention layers coarser than the latent, resolutions averaged with equal weights"
)


def query_sides(latent_side: int) -> range:
    """Latent sides whose cross-attention queries are kept: every one coarser than the latent."""
    return range(1, latent_side)


@dataclass
class SliceState:
    """What a slice's pass leaves for prompting: its partition and its cross-attention queries.

    labels:      (R, R) int16 merged partition at the model resolution R (padding included).
    image_shape: (height, width) of the input image, to undo the square fit.
    queries:     layer name -> (heads, N, head_dim) float16.
    """

    labels: torch.Tensor
    image_shape: Tuple[int, int]
    queries: Dict[str, torch.Tensor]

    @property
    def nbytes(self) -> int:
        tensors = [self.labels, *self.queries.values()]
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def token_probabilities(query: torch.Tensor, keys: torch.Tensor, scale: float, prompts: int = 1) -> List[torch.Tensor]:
    """softmax(Q·Kᵀ·scale) in fp32 of queries (..., N, d) against the keys of ``prompts`` prompts stacked
    along the tokens (..., prompts*T, d): one (..., N, T) per prompt, each normalised over its own T tokens.

    The same probabilities diffusers' stock ``AttnProcessor`` computes (``get_attention_scores``); one
    product against the stacked keys serves every prompt."""
    scores = torch.matmul(query.float() * scale, keys.float().transpose(-1, -2))
    # A (..., N, prompts, T) view keeps each softmax's row contiguous: on a strided chunk it is several times slower.
    probabilities = scores.view(*scores.shape[:-1], prompts, -1).softmax(dim=-1)
    return list(probabilities.unbind(dim=-2))


def layer_keys(attn, embedding: torch.Tensor) -> torch.Tensor:
    """(heads, T, head_dim) keys of one prompt embedding (1, T, D) for the attention module ``attn``."""
    context = attn.norm_encoder_hidden_states(embedding) if attn.norm_cross else embedding
    key = attn.to_k(context)
    tokens = key.shape[1]
    key = key.view(1, tokens, attn.heads, -1).transpose(1, 2)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    return key[0].float()


def cross_attention_layers(unet) -> Dict[str, object]:
    """Processor name -> attention module, for the cross-attention layers (the names ``capture_attention`` uses)."""
    processors = set(unet.attn_processors)
    return {f"{name}.processor": module for name, module in unet.named_modules()
            if f"{name}.processor" in processors and getattr(module, "is_cross_attention", False)}


def prompt_keys(layers: Dict[str, object], embeddings: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Layer name -> the keys of every prompt embedding stacked along the tokens, (heads, prompts*T, d)."""
    return {name: torch.cat([layer_keys(attn, embedding) for embedding in embeddings], dim=1) for name, attn in layers.items()}


def prompt_token_maps(states: Sequence[SliceState], layers: Dict[str, object], keys: Dict[str, torch.Tensor],
                      contents: Sequence[List[int]]) -> List[List[Dict[int, torch.Tensor]]]:
    """For every prompt (its content positions in ``contents``, its keys in ``keys`` from ``prompt_keys``)
    and every state: side -> (N, 1), the probability of the content tokens averaged over them, the heads and
    the layers of that side. The token mean comes before ``prompt_attention_map`` upsamples (both are
    linear, and one map per side is cheaper than one per token); slices are scored one by one, which
    costs no more than a batched product and copies no query."""
    maps: List[List[Dict[int, torch.Tensor]]] = [[{} for _ in states] for _ in contents]
    counts: Dict[int, int] = {}
    for name in states[0].queries:
        attn = layers[name]
        side = int(round(states[0].queries[name].shape[1] ** 0.5))
        counts[side] = counts.get(side, 0) + 1
        for image, state in enumerate(states):
            query = state.queries[name]
            probabilities = token_probabilities(query, keys[name].to(query.device), attn.scale, len(contents))
            for per_prompt, content, prompt_probabilities in zip(maps, contents, probabilities):
                content_mean = prompt_probabilities[..., content].mean(dim=(0, 2))
                per_side = per_prompt[image]
                per_side[side] = per_side[side] + content_mean if side in per_side else content_mean
    return [[{side: (total / counts[side])[:, None] for side, total in per_side.items()} for per_side in per_prompt]
            for per_prompt in maps]
