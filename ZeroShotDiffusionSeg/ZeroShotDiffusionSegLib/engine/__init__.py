"""The engine core: backbone loading, attention capture, DiffSeg merging, prompt/seed selection.

Public contract (everything else in the product calls these):
- ``load_backbone(model, device=None, dtype=None) -> Backbone``
- ``DiffusionSegmenter(backbone).segment_batch(images, prompt=None, seeds=None, params=SegmentationParams())``
- ``segment_self_attention(self_attn, kl_threshold=1.1, grid_points=16, iterations=3, refine=False)``
"""

from ..errors import ModelLoadError
from .backbone import DEFAULT_MODEL, Backbone, load_backbone
from .merging import aggregate_self_attention, segment_self_attention
from .segmenter import DiffusionSegmenter
from .types import ImageResult, SegmentationParams

__all__ = [
    "DEFAULT_MODEL", "Backbone", "DiffusionSegmenter", "ImageResult", "ModelLoadError", "SegmentationParams",
    "aggregate_self_attention", "load_backbone", "segment_self_attention",
]
