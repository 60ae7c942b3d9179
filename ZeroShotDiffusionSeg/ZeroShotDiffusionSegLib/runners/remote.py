"""RemoteRunner: the Runner interface on top of a ``zsdseg serve`` server.

Each job runs in a background thread (upload, wait, download: ``run_remote_job``; a re-prompt:
``rerun_remote_job`` on the job kept on the server, ``KeptJob``), which puts RunnerEvents on a
queue; ``poll()`` drains that queue on the caller's thread, so the Slicer main thread never
waits on the network. ``cancel()`` only sets an Event: the thread then stops the upload or
download it is in, or cancels the job on the server.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, List, Optional

from ..errors import Cancelled, UserError
from ..progress import ProgressEvent
from ..volume.request import VolumeRequest
from .base import JobHandle, Runner, RunnerEvent


RELEASE_WAIT_S = 2.0  # a DELETE on a reachable server takes milliseconds


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
        self._kept_jobs = KeptJob()

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
        return self._launch(JobHandle(str(input_path), str(out_dir)), request, previous=None)

    def rescore(self, previous: JobHandle, out_dir: str, request: VolumeRequest) -> JobHandle:
        """Run ``request`` (typically a new prompt) on the volume of the finished job ``previous``.

        The server queues a new job on the volume it kept for ``previous`` (no upload) and scores it from
        its query cache when the request changes nothing of the pass. When the server no longer has that
        job (expired, or restarted) or this runner did not run it, ``previous.input_path`` is uploaded
        again, and a ``log`` event says so."""
        return self._launch(JobHandle(previous.input_path, str(out_dir)), request, previous=previous.job_id)

    def _launch(self, job: JobHandle, request: VolumeRequest, previous: Optional[str]) -> JobHandle:
        if self._job is not None:
            raise UserError("a segmentation is already running; cancel it first")
        self._job, self._cancel = job, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(job, request, self._cancel, previous), daemon=True,
                                        name="zsdseg-remote-job")
        self._thread.start()
        return job

    def _run(self, job: JobHandle, request: VolumeRequest, cancel: threading.Event, previous: Optional[str]) -> None:
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

                result = self._kept_jobs.run(client, job, request, previous, progress, cancel, self.poll_s,
                                             lambda line: put(RunnerEvent("log", job.job_id, message=line)))
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
        """Cancels the current job (on the server too) and waits, bounded, for its thread; then deletes the
        job kept on the server for a re-prompt, waiting at most ``RELEASE_WAIT_S`` for that (Slicer calls this
        on its main thread at scene close: a slow or unreachable server lets the job expire there instead)."""
        self.cancel()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._kept_jobs.release(self._client_factory, RELEASE_WAIT_S)
        self._thread, self._job, self._cancel = None, None, None
        self._events = queue.Queue()


class KeptJob:
    """The runner's last finished job, kept on the server so that a re-prompt of its volume needs no upload:
    which JobHandle it answered and its id on the server. A new upload deletes it first; a finished re-prompt
    becomes the kept job and deletes the one it replaced; ``release`` (shutdown) deletes it. A job that fails
    or is cancelled is deleted at once and leaves the kept one as it was (the panel still shows that result)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._handle_id: Optional[str] = None
        self._server_id: Optional[str] = None

    def run(self, client, job: JobHandle, request: VolumeRequest, previous: Optional[str], progress, cancel,
            poll_s: float, log: Callable[[str], None]):
        """Runs ``job`` (a re-prompt of the handle ``previous``, or an upload when ``previous`` is None)."""
        from ..server.client import JobNotFound, rerun_remote_job, run_remote_job

        with self._lock:
            kept_handle, kept_server_id = self._handle_id, self._server_id
        new_ids: List[str] = []
        options = dict(progress=progress, cancel=cancel, keep_on_server=True, poll_s=poll_s, on_job=new_ids.append)
        try:
            result = None
            if previous is not None and previous == kept_handle:
                try:
                    result = rerun_remote_job(client, kept_server_id, job.out_dir, request, **options)
                except JobNotFound:
                    if new_ids:
                        raise  # the new job vanished later: not the kept one expiring
                    self._forget(kept_server_id)
                    log(f"the server no longer has job {kept_server_id} (it expired or the server restarted): "
                        "uploading the volume again")
            elif previous is not None:
                log("the server does not hold this volume for this runner: uploading it again")
            if result is None:
                self._delete_kept(client)  # replaced by the upload below
                result = run_remote_job(client, job.input_path, job.out_dir, request, **options)
        except BaseException:
            for server_id in new_ids:
                _delete_quietly(client, server_id)  # a failed or cancelled job leaves nothing to re-prompt
            raise
        with self._lock:
            replaced, self._handle_id, self._server_id = self._server_id, job.job_id, new_ids[-1]
        if replaced is not None:
            _delete_quietly(client, replaced)
        return result

    def release(self, client_factory: Callable[[], object], timeout_s: float) -> None:
        """Deletes the kept job on the server, waiting at most ``timeout_s``."""
        with self._lock:
            server_id, self._handle_id, self._server_id = self._server_id, None, None
        if server_id is None:
            return

        def delete() -> None:
            try:
                client = client_factory()
            except UserError:
                return  # a URL the runner cannot use has no job to delete
            try:
                _delete_quietly(client, server_id)
            finally:
                client.close()

        thread = threading.Thread(target=delete, daemon=True, name="zsdseg-remote-release")
        thread.start()
        thread.join(timeout_s)

    def _delete_kept(self, client) -> None:
        with self._lock:
            server_id, self._handle_id, self._server_id = self._server_id, None, None
        if server_id is not None:
            _delete_quietly(client, server_id)

    def _forget(self, server_id: str) -> None:
        with self._lock:
            if self._server_id == server_id:
                self._handle_id, self._server_id = None, None


def _delete_quietly(client, server_id: str) -> None:
    try:
        client.delete(server_id)
    except UserError:
        pass  # the server lets it expire (result TTL); the user's result or error matters more
