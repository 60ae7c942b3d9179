"""Cancel reaches inside the engine: between the images of one batch and between merging iterations."""

import threading

import numpy as np
import pytest
import torch

from ZeroShotDiffusionSegLib.engine import merging, segmenter as segmenter_module
from ZeroShotDiffusionSegLib.engine.types import SegmentationParams
from ZeroShotDiffusionSegLib.errors import Cancelled
from ZeroShotDiffusionSegLib.progress import cancel_scope, check_active_cancel
from ZeroShotDiffusionSegLib.volume.batching import BatchRunner


def random_attention(side=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    maps = torch.rand(1, side * side, side * side, generator=generator)
    return {side: maps / maps.sum(-1, keepdim=True)}


def test_check_active_cancel_sees_only_the_innermost_scope():
    outer, inner = threading.Event(), threading.Event()
    outer.set()
    check_active_cancel()  # outside any scope: nothing to check
    with cancel_scope(outer):
        with cancel_scope(inner):
            check_active_cancel()
        with pytest.raises(Cancelled):
            check_active_cancel()
    check_active_cancel()


def test_a_cancel_during_merging_stops_before_the_next_iteration(monkeypatch):
    cancel, calls = threading.Event(), []
    original = merging._merge_proposals

    def merge_then_cancel(proposals, threshold):
        calls.append(len(proposals))
        cancel.set()  # as if the user pressed Cancel during this iteration
        return original(proposals, threshold)

    monkeypatch.setattr(merging, "_merge_proposals", merge_then_cancel)
    with cancel_scope(cancel), pytest.raises(Cancelled):
        merging.segment_self_attention(random_attention(), grid_points=4, iterations=20)
    assert len(calls) == 1  # iterations 3..20 never ran
    assert merging.segment_self_attention(random_attention(), grid_points=4, iterations=3).shape == (64, 64)  # no scope


def test_a_cancel_during_a_batch_stops_after_one_image(tiny_segmenter, monkeypatch):
    """The real engine, a batch of 4 slices, cancel set while the first slice merges: one merging ran, not four."""
    cancel, merged = threading.Event(), []
    original = segmenter_module.segment_self_attention

    def merge_then_cancel(*args, **kwargs):
        merged.append(1)
        cancel.set()
        return original(*args, **kwargs)

    monkeypatch.setattr(segmenter_module, "segment_self_attention", merge_then_cancel)
    images = [np.random.default_rng(i).random((32, 32)).astype(np.float32) for i in range(4)]
    runner = BatchRunner(tiny_segmenter, 4, SegmentationParams(grid_points=4), cancel)
    with pytest.raises(Cancelled):
        runner.run(list(range(4)), lambda i: images[i], lambda key, result: None)
    assert len(merged) == 1 and runner.slices == 0
