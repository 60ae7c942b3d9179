"""The runner interface: what the Slicer logic needs from wherever the engine runs.

Contract (for local, remote and test runners alike):

* ``start(input_path, out_dir, request) -> JobHandle`` returns at once. ``input_path`` is
  a volume file the caller wrote (NRRD, with its geometry); the runner makes the
  engine's output files appear in ``out_dir`` on this computer (a remote runner
  downloads them there). One job at a time: starting while ``busy`` raises UserError.
* ``poll() -> list[RunnerEvent]`` never blocks and never touches Qt; the Slicer widget
  calls it from a QTimer on the main thread. Events of one job arrive in order and end
  with exactly one of ``done``, ``error``, ``cancelled`` or ``crashed``.
* ``cancel()`` stops the current job and returns quickly; a ``cancelled`` event follows
  on the next ``poll``. No files of a cancelled job are used.
* ``shutdown()`` releases everything (process, connection); the runner may be started
  again afterwards. The logic calls it on module cleanup and scene close.

Event kinds (``RunnerEvent.kind``):
  ``ready``     engine loaded; ``info`` holds e.g. {"model": ..., "device": ...}
  ``progress``  ``stage``, ``fraction`` (0..1 of the job), ``eta_s`` (seconds or None), ``message``
  ``log``       one line of engine log in ``message`` (for the panel's log box)
  ``done``      ``files`` {"labels", "score", "lesions", "provenance"} -> local paths,
                ``lesions`` (rows of lesions.csv), ``messages`` (what the engine chose/skipped)
  ``error``     ``message``: a one-line reason the user can act on; ``fatal`` when the engine
                itself cannot work (model failed to load) rather than just this job
  ``cancelled`` the job was stopped by ``cancel()``
  ``crashed``   the engine died; ``message`` and ``log_tail`` say why; a new ``start`` restarts it
"""

from __future__ import annotations

import abc
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..volume.request import VolumeRequest

EVENT_KINDS = ("ready", "progress", "log", "done", "error", "cancelled", "crashed")
FINAL_KINDS = ("done", "error", "cancelled", "crashed")


@dataclass
class JobHandle:
    input_path: str
    out_dir: str
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: float = field(default_factory=time.monotonic)


@dataclass
class RunnerEvent:
    kind: str
    job_id: Optional[str] = None
    stage: str = ""
    fraction: Optional[float] = None
    eta_s: Optional[float] = None
    message: str = ""
    files: Dict[str, str] = field(default_factory=dict)
    lesions: List[dict] = field(default_factory=list)
    messages: List[str] = field(default_factory=list)
    fatal: bool = False
    info: Dict[str, object] = field(default_factory=dict)
    log_tail: List[str] = field(default_factory=list)

    def __post_init__(self):
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown runner event kind {self.kind!r}")

    @property
    def final(self) -> bool:
        return self.kind in FINAL_KINDS


class Runner(abc.ABC):
    """Runs one volume job at a time without blocking the caller. See the module docstring."""

    @abc.abstractmethod
    def start(self, input_path: str, out_dir: str, request: VolumeRequest) -> JobHandle:
        ...

    @abc.abstractmethod
    def poll(self) -> List[RunnerEvent]:
        ...

    @abc.abstractmethod
    def cancel(self) -> None:
        ...

    @abc.abstractmethod
    def shutdown(self) -> None:
        ...

    @property
    @abc.abstractmethod
    def busy(self) -> bool:
        """True from ``start`` until the job's final event has been returned by ``poll``."""

    def describe(self) -> str:
        """One line for the panel: where the engine runs."""
        return type(self).__name__
