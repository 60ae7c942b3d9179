"""LocalWorkerRunner: a warm worker subprocess on this computer.

The worker (``python -m ZeroShotDiffusionSegLib.worker``, run with Slicer's PythonSlicer)
loads the model once and serves one job per stdin line, so the second prompt on the same
volume does not pay the model load again. Two reader threads turn its stdout/stderr
lines into items of a ``queue.Queue``; ``poll()`` drains that queue on the caller's
thread, so the runner needs no Qt and the Slicer main thread never waits on a pipe.

Cancel kills the whole process tree (psutil), because a CUDA kernel cannot be
interrupted cooperatively and the engine may have started helper processes; the next
job starts a fresh worker (the model is loaded again).
"""

from __future__ import annotations

import collections
import os
import queue
import subprocess
import threading
from typing import Deque, Dict, List, Optional, Sequence

import psutil

from ..errors import UserError
from ..volume.request import VolumeRequest
from .base import JobHandle, Runner, RunnerEvent
from .protocol import encode_job, encode_reprompt, event_from_line

WORKER_MODULE = "ZeroShotDiffusionSegLib.worker"


def kill_process_tree(pid: int, timeout: float = 5.0) -> List[int]:
    """Kill ``pid`` and all its descendants; return the pids still alive after ``timeout``.

    Descendants are listed before the parent is killed: once it is gone, its orphans are
    re-parented and could no longer be found from it.
    """
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    processes = parent.children(recursive=True) + [parent]
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return [process.pid for process in alive]


def _pump(stream, tag: str, generation: int, sink: "queue.Queue") -> None:
    """Reader thread: forward lines of one pipe, then an end marker."""
    try:
        for line in iter(stream.readline, ""):
            sink.put((generation, tag, line.rstrip("\r\n")))
    except (OSError, ValueError):  # pipe closed under us by a kill
        pass
    finally:
        sink.put((generation, tag + "-eof", None))


class LocalWorkerRunner(Runner):
    """Runs jobs in a persistent worker process. ``command`` is the full worker command line."""

    def __init__(self, command: Sequence[str], env: Optional[Dict[str, str]] = None,
                 cwd: Optional[str] = None, log_lines: int = 400):
        self.command = list(command)
        self.env = env
        self.cwd = cwd
        self._log: Deque[str] = collections.deque(maxlen=log_lines)
        self._queue: "queue.Queue" = queue.Queue()
        self._process: Optional[subprocess.Popen] = None
        self._threads: List[threading.Thread] = []
        self._generation = 0
        self._job: Optional[JobHandle] = None
        self._pending: List[RunnerEvent] = []
        self._fatal_reported = False
        self._eof_seen = set()
        self._finished: set = set()  # jobs done by the current worker process: it can re-prompt them
        self.worker_info: Dict[str, object] = {}

    @classmethod
    def for_model(cls, python_executable: str, model: str, device: str = "auto", dtype: Optional[str] = None,
                  pythonpath: Sequence[str] = (), env: Optional[Dict[str, str]] = None) -> "LocalWorkerRunner":
        """The usual worker: ``python -m ZeroShotDiffusionSegLib.worker --model M --device D``.

        ``pythonpath`` must contain the folder holding ``ZeroShotDiffusionSegLib`` when the
        interpreter would not find it (Slicer adds extension folders to its own sys.path, not to
        PythonSlicer's). The worker module is run directly rather than through ``cli`` because the
        CLI imports every subcommand (the HTTP server's too), which Slicer's Python may lack.
        """
        from ..slicer.setup_state import worker_environment

        command = [python_executable, "-m", WORKER_MODULE, "--model", model, "--device", device]
        if dtype:
            command += ["--dtype", dtype]
        worker_env = worker_environment(model, env)
        if pythonpath:
            parts = list(pythonpath) + ([worker_env["PYTHONPATH"]] if worker_env.get("PYTHONPATH") else [])
            worker_env["PYTHONPATH"] = os.pathsep.join(parts)
        return cls(command, env=worker_env)

    # --- state ---------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._job is not None

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    @property
    def worker_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def ready(self) -> bool:
        return self.worker_alive and bool(self.worker_info)

    def log_tail(self, lines: int = 40) -> List[str]:
        return list(self._log)[-lines:]

    def describe(self) -> str:
        model = self.worker_info.get("model", "?")
        device = self.worker_info.get("device", "?")
        return f"local worker (model {model}, device {device})" if self.ready else "local worker (not started)"

    # --- process -------------------------------------------------------------------

    def _start_process(self) -> None:
        self._generation += 1
        self._finished = set()
        self._fatal_reported = False
        self._eof_seen = set()
        self.worker_info = {}
        flags = subprocess.CREATE_NO_WINDOW if os.name == "nt" else 0  # no console window on Windows
        try:
            self._process = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, encoding="utf-8", errors="replace", bufsize=1, env=self.env, cwd=self.cwd,
                creationflags=flags)
        except OSError as error:
            self._process = None
            raise UserError(f"cannot start the segmentation worker ({self.command[0]}): {error}") from error
        self._threads = [
            threading.Thread(target=_pump, args=(stream, tag, self._generation, self._queue), daemon=True,
                             name=f"zsdseg-worker-{tag}")
            for stream, tag in ((self._process.stdout, "stdout"), (self._process.stderr, "stderr"))
        ]
        for thread in self._threads:
            thread.start()

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        self._generation += 1  # lines still queued from the old process are ignored
        self.worker_info = {}
        if process is None:
            return
        if process.poll() is None:
            kill_process_tree(process.pid)
        for stream in (process.stdin, process.stdout, process.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    # --- Runner interface ----------------------------------------------------------

    def start(self, input_path: str, out_dir: str, request: VolumeRequest) -> JobHandle:
        job = JobHandle(str(input_path), str(out_dir))
        return self._send(job, lambda: encode_job(job.job_id, job.input_path, job.out_dir, request))

    def rescore(self, previous: JobHandle, out_dir: str, request: VolumeRequest) -> JobHandle:
        """Run ``request`` (typically a new prompt) on the volume of the finished job ``previous``.

        The worker scores it from its query cache, without a model pass, when it still holds that volume
        and the request changes nothing of the pass; otherwise it runs it as a new job. A worker started
        since ``previous`` does not know it: then the job is sent with the input path again."""
        job = JobHandle(previous.input_path, str(out_dir))
        if self.worker_alive and previous.job_id in self._finished:
            return self._send(job, lambda: encode_reprompt(job.job_id, previous.job_id, job.out_dir, request))
        return self._send(job, lambda: encode_job(job.job_id, job.input_path, job.out_dir, request))

    def _send(self, job: JobHandle, line) -> JobHandle:
        if self._job is not None:
            raise UserError("a segmentation is already running; cancel it first")
        if not self.worker_alive:
            self._stop_process()
            self._start_process()
            self._pending.append(RunnerEvent("progress", job.job_id, stage="starting engine", fraction=0.0,
                                             message="loading the model (first run only)"))
        try:
            self._process.stdin.write(line() + "\n")
            self._process.stdin.flush()
        except (OSError, ValueError):
            # The worker died before reading; its closed pipes make poll() report a crash of this job.
            pass
        self._job = job
        return job

    def cancel(self) -> None:
        if self._job is None:
            return
        job, self._job = self._job, None
        self._stop_process()
        self._pending.append(RunnerEvent("cancelled", job.job_id, message="cancelled by the user"))

    def shutdown(self) -> None:
        """Ask the worker to exit (stdin closed), then make sure the whole tree is gone."""
        process = self._process
        if process is not None and process.poll() is None and self._job is None:
            try:
                process.stdin.close()
                process.wait(timeout=3)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        if self._job is not None:
            self.cancel()
        self._stop_process()

    def poll(self) -> List[RunnerEvent]:
        events, self._pending = self._pending, []
        while True:
            try:
                generation, tag, line = self._queue.get_nowait()
            except queue.Empty:
                break
            if generation != self._generation:
                continue
            if tag.endswith("-eof"):
                self._eof_seen.add(tag)
                if len(self._eof_seen) == 2:  # both pipes closed: the worker has exited
                    events.extend(self._on_exit())
            elif tag == "stderr":
                self._log.append(line)
                events.append(RunnerEvent("log", self._job.job_id if self._job else None, message=line))
            else:
                events.extend(self._on_stdout(line))
        return events

    def _on_stdout(self, line: str) -> List[RunnerEvent]:
        event = event_from_line(line)
        if event is None:  # a stray print on stdout: keep it in the log, never parse it
            self._log.append(line)
            return [RunnerEvent("log", self._job.job_id if self._job else None, message=line)]
        if event.kind == "ready":
            self.worker_info = dict(event.info)
            return [event]
        if event.kind == "error" and event.fatal:
            self._fatal_reported = True
            self._log.append(f"fatal: {event.message}")
            event.job_id = self._job.job_id if self._job else None
            event.log_tail = self.log_tail()
            self._job = None
            return [event]
        if self._job is None or (event.job_id not in (None, self._job.job_id)):
            return []  # late lines of a job that was cancelled or already reported
        event.job_id = self._job.job_id
        if event.final:
            if event.kind == "error":
                event.log_tail = self.log_tail()
            if event.kind == "done":
                self._finished.add(event.job_id)
            self._job = None
        return [event]

    def _on_exit(self) -> List[RunnerEvent]:
        process = self._process
        exit_code = None
        if process is not None:
            try:
                exit_code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pipes closed but the process lingers: _stop_process kills it
                pass
        self._stop_process()
        job, self._job = self._job, None
        if self._fatal_reported:
            return []  # the worker already said why it stopped
        tail = self.log_tail()
        event = RunnerEvent("crashed", job.job_id if job else None,
                            message=f"the segmentation worker exited with code {exit_code}",
                            log_tail=tail, info={"exit_code": exit_code})
        return [event]
