"""The engine core: backbone loading, attention capture, DiffSeg merging, prompt/seed selection.

Public contract (everything else in the product calls these):
- ``load_backbone(model, device=None, dtype=None) -> Backbone``
- ``DiffusionSegmenter(backbone).segment_batch(images, prompt=None, seeds=None, params=SegmentationParams())``
- ``segment_self_attention(self_attn, kl_threshold=1.1, grid_points=16, iterations=3, refine=False)``
- ``refine_boundaries(image, boxes, points=None)``: LiteMedSAM's mask per box (``engine.boundary``)

Names are resolved on first use, so ``engine.types`` (plain data) can be imported by the server
client and the Slicer panel without loading torch.
"""

import importlib

from ..errors import ModelLoadError

_EXPORTS = {
    "DEFAULT_MODEL": "backbone", "Backbone": "backbone", "load_backbone": "backbone",
    "aggregate_self_attention": "merging", "segment_self_attention": "merging",
    "DiffusionSegmenter": "segmenter",
    "BoundaryRefiner": "boundary", "refine_boundaries": "boundary",
    "ImageResult": "types", "SegmentationParams": "types",
}
__all__ = sorted([*_EXPORTS, "ModelLoadError"])


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
