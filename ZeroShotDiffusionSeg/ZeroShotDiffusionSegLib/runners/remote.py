"""RemoteRunner: the Runner interface on top of a ``zsdseg serve`` server.

Each job runs in a background thread (upload, wait, download: ``run_remote_job``), which
puts RunnerEvents on a queue; ``poll()`` drains that queue on the caller's thread, so the
Slicer main thread never waits on the network. ``cancel()`` only sets an Event: the
thread then stops the upload or download it is in, or cancels the job on the server.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, List, Optional

from ..errors import Cancelled, UserError
from ..progress import ProgressEvent
from ..volume.request import VolumeRequest
from .base import JobHandle, Runner, RunnerEvent


class RemoteRunner(Runner):
    """Runs jobs on a remote server. ``client_factory()`` returns a fresh ``ServerClient``
    (the default one uses ``url`` and ``token``); it is called in the job's thread."""

    def __init__(self, url: str, token: Optional[str] = None, poll_s: float = 1.0,
                 client_factory: Optional[Callable[[], object]] = None):
        self.url = url
        self._token = token
        self.poll_s = poll_s
        self._client_factory = client_factory or self._default_client
        self._events: "queue.Queue[RunnerEvent]" = queue.Queue()
        self._job: Optional[JobHandle] = None
        self._cancel: Optional[threading.Event] = None
        self._thread: Optional[threading.Thread] = None
        self.server_info: dict = {}

    @classmethod
    def from_token_file(cls, url: str, token_file: Optional[str], **kwargs) -> "RemoteRunner":
        from ..server.auth import read_client_token

        return cls(url, read_client_token(token_file) if token_file else None, **kwargs)

    def _default_client(self):
        from ..server.client import ServerClient

        return ServerClient(self.url, token=self._token)

    @property
    def busy(self) -> bool:
        return self._job is not None

    def describe(self) -> str:
        if not self.server_info:
            return f"remote server {self.url}"
        return f"remote server {self.url} (model {self.server_info.get('model_id', '?')}, device {self.server_info.get('device', '?')})"

    def start(self, input_path: str, out_dir: str, request: VolumeRequest) -> JobHandle:
        if self._job is not None:
            raise UserError("a segmentation is already running; cancel it first")
        job = JobHandle(str(input_path), str(out_dir))
        self._job, self._cancel = job, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(job, request, self._cancel), daemon=True,
                                        name="zsdseg-remote-job")
        self._thread.start()
        return job

    def _run(self, job: JobHandle, request: VolumeRequest, cancel: threading.Event) -> None:
        from ..server.client import run_remote_job

        put = self._events.put
        try:
            client = self._client_factory()
            try:
                if not self.server_info:
                    self.server_info = client.handshake()
                    put(RunnerEvent("ready", job.job_id, info={"model": self.server_info.get("model_id"),
                                                               "device": self.server_info.get("device"),
                                                               "server": self.url}))

                def progress(event: ProgressEvent) -> None:
                    put(RunnerEvent("progress", job.job_id, stage=event.stage, fraction=event.fraction,
                                    eta_s=event.eta_s, message=event.message))

                result = run_remote_job(client, job.input_path, job.out_dir, request, progress=progress,
                                        cancel=cancel, poll_s=self.poll_s)
            finally:
                client.close()
            put(RunnerEvent("done", job.job_id, files={k: str(v) for k, v in result.files.items()},
                            lesions=result.lesions, messages=result.messages))
        except Cancelled:
            put(RunnerEvent("cancelled", job.job_id))
        except UserError as error:
            put(RunnerEvent("error", job.job_id, message=str(error)))
        except Exception as error:  # a bug must still end the job with one final event
            put(RunnerEvent("error", job.job_id, message=f"remote job failed: {type(error).__name__}: {error}"))

    def poll(self) -> List[RunnerEvent]:
        events: List[RunnerEvent] = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if self._job is None or event.job_id != self._job.job_id:
                continue  # left over from a job shut down before its end
            events.append(event)
            if event.final:
                self._job = None
                break  # events after a final one belong to the next job's poll
        return events

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Cancels the current job (on the server too) and waits, bounded, for its thread."""
        self.cancel()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._thread, self._job, self._cancel = None, None, None
        self._events = queue.Queue()
