"""Shared fixtures. Tests are offline and CPU-only; they never need ../shared."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_backbone():
    from ZeroShotDiffusionSegLib.engine import load_backbone

    return load_backbone("random:tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_backbone):
    from ZeroShotDiffusionSegLib.engine import DiffusionSegmenter

    return DiffusionSegmenter(tiny_backbone)
