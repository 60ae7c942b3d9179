"""Progress reporting and cooperative cancellation shared by every entry point.

A long-running function takes ``progress`` (a callable receiving ``ProgressEvent``)
and ``cancel`` (a ``threading.Event``); it calls ``check_cancel(cancel)`` between
units of work (a batch of slices), so cancel takes effect within one batch.

Code that does not take a ``cancel`` argument (the engine, behind the ``Segmenter``
interface) is still cancellable: a caller runs it inside ``cancel_scope(cancel)`` and the
engine calls ``check_active_cancel()`` between images and merging iterations, so a cancel
takes effect within one slice's work.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Optional

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


_ACTIVE_CANCEL: ContextVar[Optional[threading.Event]] = ContextVar("zsdseg_active_cancel", default=None)


@contextmanager
def cancel_scope(cancel: Optional[threading.Event]) -> Iterator[None]:
    """Make ``cancel`` the event that ``check_active_cancel`` checks, in this thread, for the block."""
    token = _ACTIVE_CANCEL.set(cancel)
    try:
        yield
    finally:
        _ACTIVE_CANCEL.reset(token)


def check_active_cancel() -> None:
    """Raise Cancelled if the innermost ``cancel_scope``'s event is set (nothing outside a scope)."""
    check_cancel(_ACTIVE_CANCEL.get())


class ProgressTracker:
    """Turns 'done k of n units' into events with an ETA from the observed rate.

    The rate is measured from the first update on (not from the tracker's creation), so the first
    event has no ETA rather than a meaningless one (a unit 'done' a few microseconds after start).
    """

    def __init__(self, progress: Optional[ProgressCallback], total_units: int, stage: str):
        self._progress = progress
        self._total = max(int(total_units), 1)
        self._stage = stage
        self._first: Optional[tuple] = None  # (time, units) of the first update

    def update(self, done_units: int, message: str = "", stage: Optional[str] = None) -> None:
        if self._progress is None:
            return
        fraction = min(max(done_units / self._total, 0.0), 1.0)
        now = time.perf_counter()
        if self._first is None:
            self._first = (now, done_units)
        start, start_units = self._first
        eta = None
        if done_units > start_units:
            eta = (now - start) / (done_units - start_units) * max(self._total - done_units, 0)
        self._progress(ProgressEvent(stage or self._stage, fraction, eta, message))
