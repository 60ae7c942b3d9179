"""Image <-> model-input geometry: pad to square (never crop: a crop can cut a lesion off,
docs/algorithms.md#preprocessing), resize to the model's resolution, and the exact inverse.

Both directions use half-pixel-centre sampling (``nearest-exact`` for labels, bilinear with
``align_corners=False`` for maps), so they are each other's inverse up to resampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1|3|4) float image in [0, 1] -> (H, W, 3) float32."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise UserError(f"expected a grayscale or RGB image, got an array of shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise UserError("the image is empty")
    if not np.isfinite(image).all():
        raise UserError("the image contains NaN or infinite values")
    if image.shape[2] == 4:
        image = image[..., :3]  # alpha carries no anatomy
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.clip(image, 0.0, 1.0)


@dataclass(frozen=True)
class SquareFit:
    """Centred zero padding of an (height, width) image to a square, then resizing to ``size``."""

    height: int
    width: int
    size: int

    @property
    def side(self) -> int:
        return max(self.height, self.width)

    @property
    def pad_top(self) -> int:
        return (self.side - self.height) // 2

    @property
    def pad_left(self) -> int:
        return (self.side - self.width) // 2

    def to_model(self, image: np.ndarray) -> torch.Tensor:
        """(H, W[, C]) image in [0, 1] -> (3, size, size) tensor in [-1, 1]."""
        rgb = torch.from_numpy(as_rgb(image)).permute(2, 0, 1)
        square = torch.zeros((3, self.side, self.side), dtype=torch.float32)
        square[:, self.pad_top:self.pad_top + self.height, self.pad_left:self.pad_left + self.width] = rgb
        resized = F.interpolate(square[None], size=(self.size, self.size), mode="bilinear", align_corners=False,
                                antialias=self.side > self.size)[0]
        return resized.clamp(0.0, 1.0) * 2.0 - 1.0

    def _crop(self, square: torch.Tensor) -> np.ndarray:
        return square[self.pad_top:self.pad_top + self.height, self.pad_left:self.pad_left + self.width].cpu().numpy()

    def labels_to_image(self, labels: torch.Tensor) -> np.ndarray:
        """(size, size) integer labels at model resolution -> (H, W) int64, padding removed."""
        square = F.interpolate(labels[None, None].float(), size=(self.side, self.side), mode="nearest-exact")[0, 0]
        return self._crop(square.round().long())

    def map_to_image(self, values: torch.Tensor) -> np.ndarray:
        """(size, size) continuous map at model resolution -> (H, W) float32, padding removed."""
        square = F.interpolate(values[None, None].float(), size=(self.side, self.side), mode="bilinear", align_corners=False)[0, 0]
        return self._crop(square).astype(np.float32)

    def valid_model_pixels(self) -> torch.Tensor:
        """(size, size) bool: model pixels that come from the image rather than the padding."""
        inside = torch.zeros((self.side, self.side))
        inside[self.pad_top:self.pad_top + self.height, self.pad_left:self.pad_left + self.width] = 1.0
        return F.interpolate(inside[None, None], size=(self.size, self.size), mode="nearest-exact")[0, 0] > 0.5
