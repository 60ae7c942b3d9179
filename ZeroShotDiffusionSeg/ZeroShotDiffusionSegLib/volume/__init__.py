"""The slice-wise volume pipeline: read, window, slice, segment, consolidate in 3-D, write."""

from .request import VolumeRequest, VolumeResult

__all__ = ["VolumeRequest", "VolumeResult", "run_volume"]


def run_volume(*args, **kwargs):
    from .pipeline import run_volume as _run_volume

    return _run_volume(*args, **kwargs)
