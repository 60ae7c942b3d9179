"""A small client for ``zsdseg serve``, used by ``zsdseg segment --server`` and by the
Slicer module's remote runner. Needs only httpx.

    with ServerClient("https://gpu.example.org", token=read_client_token("~/.zsdseg-token")) as client:
        client.handshake()
        result = run_remote_job(client, "ct.nrrd", "out/", VolumeRequest(prompt="tumor"))
        # Another prompt on the same volume without a second upload: keep the first job on the server.
        kept = []
        run_remote_job(client, "ct.nrrd", "a/", VolumeRequest(prompt="tumor"), keep_on_server=True, on_job=kept.append)
        rerun_remote_job(client, kept[0], "b/", VolumeRequest(prompt="metastasis"))
        client.delete(kept[0])

Connection errors are retried with exponential backoff (a request that may already
have reached the server is retried only when repeating it is harmless); every other
failure is a ``UserError`` whose text says what to do.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional

import httpx

from .. import __version__
from ..errors import Cancelled, UserError
from ..progress import ProgressCallback, ProgressEvent, check_cancel
from ..volume.outputs import OPTIONAL_OUTPUT_NAMES
from ..volume.request import VolumeRequest, VolumeResult
from .protocol import (
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    RESULT_FILES,
    TERMINAL_STATES,
    DONE,
    CANCELLED,
    check_server_url,
    is_compatible,
    request_to_json,
    upload_extension,
)

ByteProgress = Callable[[int, Optional[int]], None]  # (bytes done, total bytes or None)

# Nothing reached the server: always safe to retry.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The request may have reached the server: retried only for idempotent requests.
MAYBE_SENT_ERRORS = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadTimeout, httpx.WriteTimeout)
RETRIED_STATUS = (502, 503, 504)  # a reverse proxy whose upstream restarts; idempotent requests only


class ServerUnavailable(UserError):
    """The server could not be reached, after retries."""


class IncompatibleServer(UserError):
    """The server speaks another major protocol version, or is not a zsdseg server."""


class JobNotFound(UserError):
    """The server has no such job: it expired (result TTL), was deleted, is another token's, or the server restarted."""


class ServerClient:
    def __init__(
        self,
        base_url: str,
        token: Optional[str] = None,
        timeout_s: float = 60.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        transport: Optional[httpx.BaseTransport] = None,
        verify=True,
    ):
        self.base_url = check_server_url(base_url).rstrip("/")
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        headers = {PROTOCOL_HEADER: PROTOCOL_VERSION, "User-Agent": f"zsdseg-client/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport, verify=verify)
        self.server_info: Optional[dict] = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, idempotent: bool = True, expected=(200,), **kwargs) -> httpx.Response:
        """One request with retries; returns the response or raises a UserError."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
                if not (idempotent and response.status_code in RETRIED_STATUS and attempt < self.retries):
                    break
            except NOT_SENT_ERRORS as error:
                if attempt >= self.retries:
                    raise ServerUnavailable(f"cannot reach the zsdseg server at {self.base_url} after {attempt + 1} attempts: {error}") from None
            except MAYBE_SENT_ERRORS as error:
                if not idempotent or attempt >= self.retries:
                    raise ServerUnavailable(f"the connection to {self.base_url} failed during {method} {path.split('?')[0]}: {error}") from None
            self._back_off(attempt)
            attempt += 1
        if response.status_code not in expected:
            raise _error_for(response, self.base_url)
        return response

    def _back_off(self, attempt: int) -> None:
        time.sleep(min(self.backoff_s * 2**attempt, 10.0))

    def _json(self, method: str, path: str, **kwargs) -> dict:
        return self._request(method, path, **kwargs).json()

    # -- the API -------------------------------------------------------------------------------
    def health(self) -> dict:
        return self._json("GET", "/health")

    def info(self) -> dict:
        return self._json("GET", "/info")

    def handshake(self) -> dict:
        """Checks the server speaks a compatible protocol and accepts the token; returns /info."""
        try:
            server_version = self._request("GET", "/health").json()["protocol_version"]
        except ServerUnavailable:
            raise
        except (ValueError, KeyError, TypeError, UserError):
            raise IncompatibleServer(f"{self.base_url} does not answer like a zsdseg server (GET /health)") from None
        if not is_compatible(server_version):
            raise IncompatibleServer(
                f"the server at {self.base_url} speaks protocol {server_version}, this client {PROTOCOL_VERSION} "
                f"(zsdseg {__version__}): install the same major version of zsdseg on both sides"
            )
        self.server_info = self.info()
        return self.server_info

    def submit(self, volume_path, request: VolumeRequest, upload_progress: Optional[ByteProgress] = None,
               cancel: Optional[threading.Event] = None) -> dict:
        """Uploads a volume and queues a job; returns the job's status (its ``id`` names it).
        Setting ``cancel`` during the upload stops it (Cancelled) before a job exists."""
        volume_path = Path(volume_path)
        extension = upload_extension(volume_path.name)
        try:
            size = volume_path.stat().st_size
        except OSError as error:
            raise UserError(f"cannot read {volume_path}: {error.strerror}") from None
        limit = (self.server_info or {}).get("limits", {}).get("max_upload_bytes")
        if limit is not None and size > limit:
            raise UserError(f"{volume_path.name} is {size / 1e6:.1f} MB; the server accepts at most {limit / 1e6:.1f} MB")
        with open(volume_path, "rb") as handle:
            reader = _ProgressReader(handle, size, upload_progress, cancel)
            files = {"volume": (f"volume{extension}", reader, "application/octet-stream")}
            data = {"request": request_to_json(request)}
            # Only a refused connection is retried: a repeated upload could queue the job twice.
            return self._json("POST", "/jobs", idempotent=False, expected=(202,), files=files, data=data)

    def reprompt(self, job_id: str, request: VolumeRequest) -> dict:
        """Queues a new job on the finished job ``job_id``'s volume (``POST /jobs/{id}/prompt``), without an
        upload; returns the new job's status. JobNotFound when the server no longer holds ``job_id``."""
        # Like an upload, it creates a job: only a refused connection is retried.
        return self._json("POST", f"/jobs/{job_id}/prompt", idempotent=False, expected=(202,),
                          data={"request": request_to_json(request)})

    def status(self, job_id: str, wait_s: float = 0.0, since: int = -1) -> dict:
        return self._json("GET", f"/jobs/{job_id}", params={"wait_s": wait_s, "since": since}, timeout=wait_s + 30.0)

    def list_jobs(self) -> list:
        return self._json("GET", "/jobs")

    def cancel(self, job_id: str) -> dict:
        return self._json("POST", f"/jobs/{job_id}/cancel", expected=(202,))

    def delete(self, job_id: str) -> None:
        self._request("DELETE", f"/jobs/{job_id}", expected=(204,))

    def wait(
        self,
        job_id: str,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[threading.Event] = None,
        poll_s: float = 1.0,
        timeout_s: Optional[float] = None,
    ) -> dict:
        """Follows a job until it ends (long polls of at most ``poll_s``, so a cancel is seen
        that fast). Cancelling cancels the job on the server and raises Cancelled."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        status = self.status(job_id)
        reported = None  # the last event passed on: a long poll that times out returns the same status again

        def report(status: dict) -> None:
            nonlocal reported
            event = _event_of(status)
            if progress is not None and event != reported:
                progress(event)
                reported = event

        while status["state"] not in TERMINAL_STATES:
            if cancel is not None and cancel.is_set():
                self.cancel(job_id)
                raise Cancelled("cancelled")
            if deadline is not None and time.monotonic() > deadline:
                raise UserError(f"job {job_id} did not finish within {timeout_s:.0f} s (it is {status['state']})")
            report(status)
            status = self.status(job_id, wait_s=poll_s, since=status["version"])
        report(status)
        return status

    def download(self, job_id: str, name: str, destination, download_progress: Optional[ByteProgress] = None,
                 cancel: Optional[threading.Event] = None) -> Path:
        """Streams one result to ``destination`` (written whole or not at all)."""
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        attempt = 0
        while True:
            descriptor, partial = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
            try:
                with os.fdopen(descriptor, "wb") as target:
                    self._stream_to(f"/jobs/{job_id}/results/{name}", target, download_progress, cancel)
                os.replace(partial, destination)
                return destination
            except MAYBE_SENT_ERRORS + NOT_SENT_ERRORS as error:
                if attempt >= self.retries:
                    raise ServerUnavailable(f"downloading {name} from {self.base_url} failed: {error}") from None
            finally:
                if os.path.exists(partial):
                    os.unlink(partial)
            self._back_off(attempt)
            attempt += 1

    def _stream_to(self, path: str, target, download_progress: Optional[ByteProgress], cancel) -> None:
        with self._http.stream("GET", path) as response:
            if response.status_code != 200:
                response.read()
                raise _error_for(response, self.base_url)
            total = int(response.headers["Content-Length"]) if "Content-Length" in response.headers else None
            done = 0
            for chunk in response.iter_bytes(1024 * 1024):
                check_cancel(cancel)
                target.write(chunk)
                done += len(chunk)
                if download_progress is not None:
                    download_progress(done, total)

    def download_results(self, job_id: str, out_dir, names: Iterable[str] = tuple(RESULT_FILES), download_progress=None,
                         cancel: Optional[threading.Event] = None) -> Dict[str, Path]:
        out_dir = Path(out_dir)
        return {name: self.download(job_id, name, out_dir / RESULT_FILES[name], download_progress, cancel) for name in names}


def run_remote_job(
    client: ServerClient,
    volume_path,
    out_dir,
    request: VolumeRequest,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
    keep_on_server: bool = False,
    poll_s: float = 1.0,
    on_job: Optional[Callable[[str], None]] = None,
) -> VolumeResult:
    """Upload, wait, download, delete: the remote equivalent of ``run_volume``, writing the same
    files into ``out_dir`` (the four of every run; healthy and residual too when the request has
    ``pseudo_healthy``) and answering the same VolumeResult (timings: upload_s, queued_s, server_s,
    download_s). Progress stages: ``upload``, the server's, ``download``. ``on_job(job_id)`` is
    called as soon as the server has queued the job."""
    if client.server_info is None:
        client.handshake()
    started = time.perf_counter()
    status = client.submit(volume_path, request, upload_progress=_bytes_progress(progress, "upload"), cancel=cancel)
    return _finish_job(client, status, started, out_dir, Path(volume_path).name, request, progress, cancel,
                       keep_on_server, poll_s, on_job)


def rerun_remote_job(
    client: ServerClient,
    job_id: str,
    out_dir,
    request: VolumeRequest,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
    keep_on_server: bool = False,
    poll_s: float = 1.0,
    on_job: Optional[Callable[[str], None]] = None,
) -> VolumeResult:
    """``run_remote_job`` on the volume the server kept for the finished job ``job_id`` (``POST
    /jobs/{id}/prompt``): no upload (``upload_s`` is the time of that request), then wait, download,
    delete the new job as ``run_remote_job`` does. ``job_id`` itself is left as it is. JobNotFound when
    the server no longer holds it (expired, or the server restarted): upload the volume again."""
    if client.server_info is None:
        client.handshake()
    check_cancel(cancel)
    started = time.perf_counter()
    status = client.reprompt(job_id, request)
    return _finish_job(client, status, started, out_dir, f"job {job_id}'s volume", request, progress, cancel,
                       keep_on_server, poll_s, on_job)


def _bytes_progress(progress: Optional[ProgressCallback], stage: str) -> Optional[ByteProgress]:
    if progress is None:
        return None
    return lambda done, total: progress(ProgressEvent(stage, done / total if total else 0.0, None, f"{done / 1e6:.1f} MB"))


def _finish_job(client: ServerClient, status: dict, started: float, out_dir, volume_name: str, request: VolumeRequest,
                progress: Optional[ProgressCallback], cancel: Optional[threading.Event], keep_on_server: bool,
                poll_s: float, on_job: Optional[Callable[[str], None]]) -> VolumeResult:
    """Wait for the queued job of ``status``, download what it lists, delete it (unless ``keep_on_server``).
    A listed name this client does not know (a newer server's) is skipped, and the messages say so."""
    uploaded = time.perf_counter()
    job_id = status["id"]
    try:
        if on_job is not None:
            on_job(job_id)
        status = client.wait(job_id, progress=progress, cancel=cancel, poll_s=poll_s)
        if status["state"] == CANCELLED:
            raise Cancelled("cancelled on the server")
        if status["state"] != DONE:
            raise UserError(f"the server could not segment {volume_name}: {status.get('error') or status['state']}")
        finished = time.perf_counter()
        names = [name for name in status["results"] if name in RESULT_FILES]
        files = client.download_results(job_id, out_dir, names, _bytes_progress(progress, "download"), cancel)
    finally:
        if not keep_on_server:
            try:
                client.delete(job_id)
            except UserError:
                pass  # it expires on the server anyway; the user's result (or error) matters more
    timings = {
        "upload_s": uploaded - started,
        "queued_s": (status["started_at"] or status["created_at"]) - status["created_at"],
        "server_s": (status["finished_at"] or 0.0) - (status["started_at"] or 0.0),
        "download_s": time.perf_counter() - finished,
        "total_s": time.perf_counter() - started,
    }
    return VolumeResult(out_dir=Path(out_dir), files=files, lesions=status.get("lesions", []), timings=timings,
                        messages=list(status.get("messages", [])) + _result_notes(client, status["results"], request))


def _result_notes(client: ServerClient, listed, request: VolumeRequest) -> list:
    """What the user should know about results not downloaded: names this client does not know, and
    pseudo-healthy volumes the server did not list (one of an older protocol does not return them)."""
    notes = []
    unknown = sorted(set(listed) - set(RESULT_FILES))
    if unknown:
        notes.append(f"the server also offers {', '.join(unknown)[:200]}, which this client does not know; not downloaded")
    if request.pseudo_healthy is not None and not set(OPTIONAL_OUTPUT_NAMES) <= set(listed):
        version = (client.server_info or {}).get("protocol_version", "?")
        notes.append(f"the server (protocol {version}) did not return the pseudo-healthy volumes (healthy.nrrd, "
                     "residual.nrrd); the segments are its refined selection")
    return notes


def _event_of(status: dict) -> ProgressEvent:
    if status["state"] == "queued":
        position = status.get("queue_position")
        return ProgressEvent("queued", 0.0, None, f"position {position} in the server's queue" if position else "")
    return ProgressEvent(status["stage"], float(status["fraction"]), status.get("eta_s"), status.get("error") or "")


def _error_for(response: httpx.Response, base_url: str) -> UserError:
    try:
        detail = response.json().get("detail", "")
    except (ValueError, AttributeError):
        detail = ""
    if not isinstance(detail, str):  # FastAPI's 422 lists the fields
        detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', '')}" for d in detail)
    code = response.status_code
    if code == 401:
        return UserError(f"the server at {base_url} needs a token: pass --token-file")
    if code == 403:
        return UserError(f"the server at {base_url} refused the token")
    if code == 404:
        return JobNotFound(f"the server has no such job (expired, deleted, or another token's): {detail}")
    if code == 426:
        return IncompatibleServer(f"incompatible server: {detail}")
    return UserError(f"the server answered {code}: {detail or response.reason_phrase}")


class _ProgressReader:
    """A read-only file wrapper that reports how much httpx has read for the upload."""

    def __init__(self, handle, total: int, callback: Optional[ByteProgress], cancel: Optional[threading.Event]):
        self._handle, self._total, self._callback, self._cancel, self._done = handle, total, callback, cancel, 0

    def read(self, size: int = -1) -> bytes:
        check_cancel(self._cancel)
        chunk = self._handle.read(size)
        self._done += len(chunk)
        if self._callback is not None and chunk:
            self._callback(self._done, self._total)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._handle.seek(offset, whence)
        if whence == 0 and offset == 0:
            self._done = 0  # a retried upload starts again
        return position

    def tell(self) -> int:
        return self._handle.tell()

    def fileno(self) -> int:
        return self._handle.fileno()
