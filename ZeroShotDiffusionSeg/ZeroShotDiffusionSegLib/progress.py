"""Progress reporting and cooperative cancellation shared by every entry point.

A long-running function takes ``progress`` (a callable receiving ``ProgressEvent``)
and ``cancel`` (a ``threading.Event``); it calls ``check_cancel(cancel)`` between
units of work (a batch of slices), so cancel takes effect within one batch.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from .errors import Cancelled


@dataclass(frozen=True)
class ProgressEvent:
    stage: str
    fraction: float  # 0..1 of the whole run
    eta_s: Optional[float] = None
    message: str = ""

    def to_json(self) -> str:
        return json.dumps({"event": "progress", **asdict(self)})


ProgressCallback = Callable[[ProgressEvent], None]


def check_cancel(cancel: Optional[threading.Event]) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")


class ProgressTracker:
    """Turns 'done k of n units' into events with an ETA from the observed rate."""

    def __init__(self, progress: Optional[ProgressCallback], total_units: int, stage: str):
        self._progress = progress
        self._total = max(int(total_units), 1)
        self._stage = stage
        self._start = time.perf_counter()

    def update(self, done_units: int, message: str = "", stage: Optional[str] = None) -> None:
        if self._progress is None:
            return
        fraction = min(max(done_units / self._total, 0.0), 1.0)
        elapsed = time.perf_counter() - self._start
        eta = elapsed * (1.0 - fraction) / fraction if fraction > 0 else None
        self._progress(ProgressEvent(stage or self._stage, fraction, eta, message))
