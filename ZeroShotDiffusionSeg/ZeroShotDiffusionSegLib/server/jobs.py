"""The job queue of ``zsdseg serve``: jobs run one at a time per worker (one worker per
loaded model copy), in submission order.

Lifecycle of a job's files, all under ``<work_root>/<job id>/``:
  * ``input<ext>``: the upload; removed as soon as the job ends, whatever the outcome.
  * ``out/``: the results; kept ``result_ttl_s`` seconds after a job finished, then
    removed with the job's record. Failed and cancelled jobs keep no files at all.
Deleting a job removes its record at once and its files as soon as no worker uses them.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..errors import Cancelled, UserError
from ..progress import ProgressCallback, ProgressEvent
from ..volume.request import VolumeRequest, VolumeResult
from .protocol import CANCELLED, DONE, FAILED, QUEUED, RUNNING, TERMINAL_STATES
from .work_dirs import WorkRoot

log = logging.getLogger("zsdseg.server")

# What runs one job: run_volume's signature with the segmenter already bound.
Executor = Callable[..., VolumeResult]  # (input_path, out_dir, request, progress=, cancel=) -> VolumeResult


class QueueFull(UserError):
    """The server holds as many queued jobs as it is configured to."""


@dataclass
class Job:
    id: str
    owner: str
    request: VolumeRequest
    work_dir: Path
    input_path: Path
    state: str = QUEUED
    stage: str = "queued"
    fraction: float = 0.0
    eta_s: Optional[float] = None
    error: Optional[str] = None
    messages: List[str] = field(default_factory=list)
    lesions: List[dict] = field(default_factory=list)
    results: Dict[str, Path] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    cancel: threading.Event = field(default_factory=threading.Event)
    version: int = 0  # grows with every change, so a long poll can wait for "something new"
    deleted: bool = False

    @property
    def out_dir(self) -> Path:
        return self.work_dir / "out"


class JobManager:
    def __init__(
        self,
        executors: Sequence[Executor],
        work_parent: Optional[Path] = None,
        result_ttl_s: float = 3600.0,
        max_queued: int = 64,
    ):
        if not executors:
            raise ValueError("at least one executor is needed")
        self._executors = list(executors)
        self._work_parent = work_parent
        self.work_root: Optional[Path] = None  # a private directory made by start(), removed by stop()
        self._work: Optional[WorkRoot] = None
        self.result_ttl_s = float(result_ttl_s)
        self.max_queued = int(max_queued)
        self._jobs: Dict[str, Job] = {}
        self._queue: deque = deque()
        self._running: Dict[str, Job] = {}
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._stopping = False
        self._stopped = threading.Event()  # wakes the reaper; workers wait on _wakeup
        self._threads: List[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._work = WorkRoot(self._work_parent)  # also removes the folders of a server that was killed
        self.work_root = self._work.path
        for index, executor in enumerate(self._executors):
            thread = threading.Thread(target=self._worker_loop, args=(executor,), name=f"zsdseg-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        reaper = threading.Thread(target=self._reaper_loop, name="zsdseg-reaper", daemon=True)
        reaper.start()
        self._threads.append(reaper)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Cancel everything, wait for the workers (each stops within one batch) and remove all files."""
        with self._lock:
            self._stopping = True
            self._stopped.set()
            for job in list(self._jobs.values()) + list(self._running.values()):
                job.cancel.set()
            self._wakeup.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._work is not None:
            self._work.release()

    # -- the API's operations ----------------------------------------------------------------
    def new_job_dir(self) -> tuple:
        """A fresh unguessable id and its private directory, for the upload to be written into."""
        job_id = secrets.token_urlsafe(24)
        work_dir = self.work_root / job_id
        work_dir.mkdir(mode=0o700)
        return job_id, work_dir

    def submit(self, job_id: str, owner: str, work_dir: Path, input_path: Path, request: VolumeRequest) -> Job:
        with self._lock:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self._queue) >= self.max_queued:
                raise QueueFull(f"the server's queue is full ({self.max_queued} jobs); try again later")
            job = Job(id=job_id, owner=owner, request=request, work_dir=work_dir, input_path=input_path)
            self._jobs[job_id] = job
            self._queue.append(job)
            self._wakeup.notify()
        log.info("job %s queued for %s (position %d)", job_id, owner, len(self._queue))
        return job

    def get(self, job_id: str, owner: str) -> Optional[Job]:
        """The job if it exists and belongs to ``owner``: another owner's job is 'not found'."""
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    def list_for(self, owner: str) -> List[Job]:
        with self._lock:
            return sorted((j for j in self._jobs.values() if j.owner == owner), key=lambda j: j.created_at)

    def queue_position(self, job: Job) -> Optional[int]:
        """1 for the next job to start; None once it has started."""
        with self._lock:
            for position, queued in enumerate(self._queue, start=1):
                if queued is job:
                    return position
        return None

    def counts(self) -> dict:
        with self._lock:
            return {"queued": len(self._queue), "running": len(self._running), "workers": len(self._executors)}

    def cancel(self, job: Job) -> None:
        with self._lock:
            self._cancel_locked(job)
        if job.state == CANCELLED:
            _remove(job.work_dir)

    def delete(self, job: Job) -> None:
        with self._lock:
            job.deleted = True
            self._jobs.pop(job.id, None)
            self._cancel_locked(job)
            in_use = job.state == RUNNING
        if not in_use:
            _remove(job.work_dir)
        log.info("job %s deleted", job.id)

    def _cancel_locked(self, job: Job) -> None:
        """Signal a running job to stop; a queued one leaves the queue, cancelled at once."""
        job.cancel.set()
        if job.state == QUEUED:
            self._queue.remove(job)
            self._finish(job, CANCELLED, stage="cancelled")

    # -- workers ---------------------------------------------------------------------------------
    def _worker_loop(self, executor: Executor) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._wakeup.wait()
                if self._stopping:
                    return
                job = self._queue.popleft()
                job.state, job.stage, job.started_at = RUNNING, "starting", time.time()
                job.version += 1
                self._running[job.id] = job
            self._run(executor, job)

    def _run(self, executor: Executor, job: Job) -> None:
        log.info("job %s started", job.id)
        outcome, error, result = FAILED, None, None
        try:
            result = executor(job.input_path, job.out_dir, job.request, progress=self._progress_of(job), cancel=job.cancel)
            outcome = DONE
        except Cancelled:
            outcome = CANCELLED
        except UserError as user_error:  # shown to the client: without the server's paths
            error = str(user_error).replace(str(job.input_path), "the uploaded volume").replace(str(job.work_dir), "the job")
        except Exception:  # a bug or an out-of-memory: the job fails, the server keeps serving
            log.exception("job %s failed", job.id)
            error = "internal error while running the job (details are in the server log)"
        with self._lock:
            self._running.pop(job.id, None)
            if result is not None:
                job.results = {name: Path(path) for name, path in result.files.items()}
                job.messages = list(result.messages)
                job.lesions = _plain_json(result.lesions)
            self._finish(job, outcome, stage=outcome, error=error)
            remove_all = job.deleted or outcome != DONE
        # The upload is never kept past its job; outputs only when there is something to fetch.
        _remove(job.work_dir if remove_all else job.input_path)
        log.info("job %s %s after %.1f s", job.id, outcome, job.finished_at - job.started_at)

    def _progress_of(self, job: Job) -> ProgressCallback:
        def progress(event: ProgressEvent) -> None:
            with self._lock:
                job.stage, job.fraction, job.eta_s = event.stage, float(event.fraction), event.eta_s
                job.version += 1

        return progress

    def _finish(self, job: Job, state: str, stage: str, error: Optional[str] = None) -> None:
        job.state, job.stage, job.error, job.eta_s = state, stage, error, None
        job.finished_at = time.time()
        if state == DONE:
            job.fraction = 1.0
        job.version += 1

    # -- expiry ----------------------------------------------------------------------------------
    def expires_at(self, job: Job) -> Optional[float]:
        return job.finished_at + self.result_ttl_s if job.finished_at is not None else None

    def remove_expired(self, now: Optional[float] = None) -> int:
        now = time.time() if now is None else now
        with self._lock:
            expired = [j for j in self._jobs.values() if j.state in TERMINAL_STATES and self.expires_at(j) <= now]
            for job in expired:
                self._jobs.pop(job.id, None)
        for job in expired:
            _remove(job.work_dir)
            log.info("job %s expired", job.id)
        return len(expired)

    def _reaper_loop(self) -> None:
        interval = min(max(self.result_ttl_s / 4, 0.05), 30.0)
        while not self._stopped.wait(interval):
            self.remove_expired()


def _plain_json(rows: List[dict]) -> List[dict]:
    """Rows with numpy scalars turned into JSON numbers, so the status answer can carry them."""
    return json.loads(json.dumps(rows, default=lambda value: value.item() if hasattr(value, "item") else str(value)))


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
