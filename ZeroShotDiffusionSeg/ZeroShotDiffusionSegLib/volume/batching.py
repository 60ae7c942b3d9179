"""Several slices per UNet pass: batch size from free memory, halved on out-of-memory.

torch is only touched when the segmenter lives on a CUDA device (or an OOM needs recognising),
so stub segmenters in tests run without importing it.
"""

from __future__ import annotations

import sys
import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..engine.types import ImageResult, SegmentationParams
from ..errors import UserError
from ..progress import cancel_scope, check_cancel

# Rough peak memory of one 512 px slice in the engine (fp32): the head-averaged 4096x4096 self-attention
# maps of the 64x64 layers dominate, and they grow with the fourth power of the resolution.
BYTES_PER_SLICE_AT_512 = 1.5e9
MEMORY_FRACTION = 0.5  # leave room for the model, the volume and everybody else
# On a CPU a bigger batch gains little and costs memory; on a GPU it fills the device.
MAX_BATCH = {"cpu": 4, "cuda": 32}


def segmenter_device(segmenter) -> str:
    """'cuda' or 'cpu' (any other device, e.g. mps, is treated like a CPU for sizing)."""
    device = getattr(segmenter, "device", "cpu")
    kind = getattr(device, "type", str(device)).split(":")[0]
    return "cuda" if kind == "cuda" else "cpu"


def _free_memory_bytes(device: str, segmenter=None) -> int:
    if device == "cuda":
        import torch

        # The segmenter's own GPU (cuda:N), not whichever device happens to be current.
        free, _total = torch.cuda.mem_get_info(getattr(segmenter, "device", None))
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def choose_batch_size(segmenter, requested: Optional[int] = None) -> Tuple[int, str]:
    """(slices per pass, why). An explicit request wins; otherwise free memory decides, capped per device."""
    if requested is not None:
        if requested < 1:
            raise UserError(f"--batch-size must be at least 1, got {requested}")
        return int(requested), "--batch-size given"
    device = segmenter_device(segmenter)
    resolution = int(getattr(segmenter, "model_resolution", 512))
    per_slice = BYTES_PER_SLICE_AT_512 * (resolution / 512.0) ** 4
    free = _free_memory_bytes(device, segmenter)
    fits = int(free * MEMORY_FRACTION // per_slice)
    size = max(1, min(MAX_BATCH[device], fits))
    return size, f"{free / 2**30:.1f} GiB free on {device}, ~{per_slice / 2**30:.2f} GiB per slice, at most {MAX_BATCH[device]}"


def is_out_of_memory(error: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    # CPU allocators raise a plain RuntimeError / MemoryError.
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and ("out of memory" in str(error).lower() or "can't allocate" in str(error).lower())
    )


def release_accelerator_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class BatchRunner:
    """Runs a segmenter over many slices in batches; the batch size only ever shrinks (on OOM)."""

    def __init__(
        self,
        segmenter,
        batch_size: int,
        params: SegmentationParams,
        cancel: Optional[threading.Event] = None,
        on_batch: Optional[Callable[[int], None]] = None,
    ):
        self.segmenter = segmenter
        self.batch_size = batch_size
        self.initial_batch_size = batch_size
        self.params = params
        self.cancel = cancel
        self.on_batch = on_batch  # called with the number of slices just finished
        self.out_of_memory_retries = 0
        self.engine_timings: Dict[str, float] = {}
        self.passes = 0
        self.slices = 0

    def run(
        self,
        keys: Sequence,
        make_image: Callable[[object], np.ndarray],
        on_result: Callable[[object, ImageResult], None],
        prompt: Optional[str] = None,
    ) -> None:
        """Segment ``make_image(key)`` for every key, in batches; hand each result to ``on_result(key, result)``.

        Images are made and results consumed batch by batch, so memory holds one batch, not the volume.
        """
        start = 0
        while start < len(keys):
            check_cancel(self.cancel)
            batch_keys = list(keys[start : start + self.batch_size])
            images = [make_image(key) for key in batch_keys]
            try:
                with cancel_scope(self.cancel):  # the engine checks it between images and merging iterations
                    results = self.segmenter.segment_batch(images, prompt=prompt, params=self.params)
            except Exception as error:  # noqa: BLE001 - only OOM is handled, everything else re-raised
                if not is_out_of_memory(error):
                    raise
                del images
                release_accelerator_memory()
                if self.batch_size == 1:
                    raise UserError(
                        "out of memory with one slice per pass; free memory, use --device cpu, or a smaller model"
                    ) from None
                self.batch_size = max(1, self.batch_size // 2)
                self.out_of_memory_retries += 1
                continue
            self.passes += 1
            self.slices += len(batch_keys)
            self._add_timings(results)
            for key, result in zip(batch_keys, results):
                on_result(key, result)
            start += len(batch_keys)
            if self.on_batch is not None:
                self.on_batch(len(batch_keys))

    def _add_timings(self, chunk_results: List[ImageResult]) -> None:
        # The engine reports one batch's stage times on every result of that batch: count them once.
        timings = chunk_results[0].timings if chunk_results else {}
        for stage, seconds in timings.items():
            self.engine_timings[stage] = self.engine_timings.get(stage, 0.0) + float(seconds)
