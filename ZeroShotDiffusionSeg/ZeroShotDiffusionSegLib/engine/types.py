"""Plain data passed in and out of the engine (no torch import, so the volume
pipeline, the server and the Slicer module can use these types cheaply)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Protocol, Sequence, Tuple

import numpy as np

from ..checked_fields import bounded, check_fields

PixelSeed = Tuple[int, int]  # (x = column, y = row) in the input image's pixels


@dataclass(frozen=True)
class SegmentationParams:
    """Every knob of one segmentation. Defaults are the DiffSeg reference (docs/algorithms.md#defaults).

    Each number declares its allowed range with ``bounded(default, low, high, flag=...)``;
    ``check_fields`` enforces them (types, NaN/inf, range) when the object is built, so the
    command line, the worker and the server refuse the same values with the same message.
    A new field gets its range the same way. The upper ends bound the work one request can ask
    for: iterations and grid points are the merging's cost, 64 the finest attention grid of SD.
    """

    kl_threshold: float = bounded(1.1, 0.0, 100.0, low_open=True, flag="--kl-threshold", title="KL threshold")
    grid_points: int = bounded(16, 1, 64, flag="--grid-points", title="grid points")
    iterations: int = bounded(3, 1, 20, flag="--iterations")
    refine: bool = bounded(False, flag="--refine")
    timestep: int = bounded(300, 0, 999, flag="--timestep")
    noise_seed: Optional[int] = bounded(None, 0, 2**32 - 1, flag="--noise-seed", title="noise seed")  # None: clean latent, as DiffSeg
    selection_threshold: float = bounded(0.5, 0.0, 1.0, flag="--selection-threshold", title="selection threshold")  # prompt mode: keep >= this
    # softmax temperature of the prompt against its normal counterpart (engine/anomaly.py)
    anomaly_temperature: float = bounded(1.0, 0.0, 100.0, low_open=True, flag="--anomaly-temperature", title="anomaly temperature")

    def __post_init__(self):
        check_fields(self)

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
