"""Plain data passed in and out of the engine (no torch import, so the volume
pipeline, the server and the Slicer module can use these types cheaply)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Protocol, Sequence, Tuple

import numpy as np

from ..errors import UserError

PixelSeed = Tuple[int, int]  # (x = column, y = row) in the input image's pixels


@dataclass(frozen=True)
class SegmentationParams:
    """Every knob of one segmentation. Defaults are the DiffSeg reference (algorithms.md §4.1)."""

    kl_threshold: float = 1.1
    grid_points: int = 16
    iterations: int = 3
    refine: bool = False
    timestep: int = 300
    noise_seed: Optional[int] = None  # None: clean latent, as the official DiffSeg code
    selection_threshold: float = 0.5  # prompt mode: keep segments whose normalised score >= this
    anomaly_temperature: float = 1.0  # softmax temperature of the prompt against its normal counterpart (engine/anomaly.py)

    def __post_init__(self):
        if not self.kl_threshold > 0:
            raise UserError(f"KL threshold must be positive, got {self.kl_threshold}")
        if self.grid_points < 1 or self.iterations < 1:
            raise UserError("grid points and iterations must be at least 1")
        if not 0 <= self.timestep < 1000:
            raise UserError(f"timestep must be in 0..999, got {self.timestep}")
        if not 0.0 <= self.selection_threshold <= 1.0:
            raise UserError(f"selection threshold must be in [0, 1], got {self.selection_threshold}")
        if not 0 < self.anomaly_temperature < float("inf"):
            raise UserError(f"anomaly temperature must be a positive number, got {self.anomaly_temperature}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImageResult:
    """The engine's answer for one image, at the input image's size (padding undone).

    labels:     (H, W) int64 partition 0..K-1 (unsupervised regions).
    prompt_map: (H, W) float32 raw per-pixel attention to the prompt's content tokens (prompt given).
    score_map:  (H, W) float32 per-pixel score of the pixel's segment = mean prompt_map (or mean
                anomaly_map with a normal prompt) over the segment; an absolute scale, so a volume can normalise it over all its slices.
    anomaly_map:(H, W) float32 per-pixel anomaly score against the normal prompt (when one is given).
    soft:       (H, W) float32 in [0, 1]: score_map / max(score_map) (prompt mode) or the
                selected segments as 1.0 (seed mode).
    mask:       (H, W) bool: soft >= selection_threshold (prompt mode) or the seeds' segments.
    """

    labels: np.ndarray
    prompt_map: Optional[np.ndarray] = None
    score_map: Optional[np.ndarray] = None
    anomaly_map: Optional[np.ndarray] = None
    soft: Optional[np.ndarray] = None
    mask: Optional[np.ndarray] = None
    timings: Dict[str, float] = field(default_factory=dict)


class Segmenter(Protocol):
    """What the volume pipeline, worker and server need of an engine; a test stub implements it too."""

    model_id: str

    def segment_batch(
        self,
        images: Sequence[np.ndarray],
        prompt: Optional[str] = None,
        seeds: Optional[Sequence[Sequence[PixelSeed]]] = None,
        params: SegmentationParams = SegmentationParams(),
    ) -> list:  # list[ImageResult]
        ...

    def provenance(self) -> dict:
        ...
