"""``zsdseg segment VOLUME --server URL --token-file F``: the same job, run by a server.

``segment_command`` calls ``run_remote_segment`` with the VolumeRequest a local run would use
when ``--server`` is given, so both produce the same files in the output folder.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional

from ..errors import Cancelled, UserError
from ..volume.request import VolumeRequest
from .protocol import UPLOAD_EXTENSIONS


def run_remote_segment(args, request: VolumeRequest) -> int:
    """Runs ``args.input`` on ``args.server`` and writes the results into ``args.out_dir``.

    ``request`` is the VolumeRequest a local run would use. Progress, Ctrl-C and the summary
    behave as in a local run; Ctrl-C cancels the job on the server.
    """
    from ..volume.cli import json_outcome, print_summary
    from ..volume.pipeline import check_request
    from .auth import read_client_token

    kind = getattr(args, "progress", None) or ("bar" if sys.stderr.isatty() else "none")
    with json_outcome(kind):
        check_request(args.input, args.out_dir, request)  # every input error, before the upload
        token = read_client_token(args.token_file) if args.token_file else None
        result = _run_on_server(args, request, token, kind)
    print_summary(result, kind)
    times = result.timings
    print(f"remote: upload {times['upload_s']:.1f} s, queued {times['queued_s']:.1f} s, server {times['server_s']:.1f} s, "
          f"download {times['download_s']:.1f} s", file=sys.stderr)
    return 0


def _run_on_server(args, request: VolumeRequest, token: Optional[str], kind: str):
    from ..volume.cli import cancel_on_signals, progress_printer
    from .client import ServerClient, run_remote_job

    callback, close = progress_printer(kind)
    callback = whole_run_progress(callback) if callback is not None else None
    cancel = threading.Event()
    timeout_s = getattr(args, "server_timeout", None)
    timed_out = threading.Event()
    timer = threading.Timer(timeout_s, lambda: (timed_out.set(), cancel.set())) if timeout_s else None
    try:
        with ServerClient(args.server, token=token) as client, _uploadable(Path(args.input)) as upload_path:
            info = client.handshake()
            print(f"server {args.server}: model {info['model_id']} on {info['device']}, {info['queue_length']} job(s) queued",
                  file=sys.stderr)
            if timer is not None:
                timer.start()
            with cancel_on_signals(cancel):
                return run_remote_job(client, upload_path, args.out_dir, request, progress=callback, cancel=cancel)
    except Cancelled:
        if timed_out.is_set():
            raise UserError(f"the server did not finish within --server-timeout {timeout_s:g} s; the job was cancelled") from None
        raise
    finally:
        if timer is not None:
            timer.cancel()
        close()


# Share of the whole remote run per stage, so the fraction shown grows from 0 to 1 once, as a local run's does.
UPLOAD_SHARE, DOWNLOAD_SHARE = 0.05, 0.05


def whole_run_progress(callback):
    """Wraps a progress callback: per-stage fractions (upload 0..1, then the server's 0..1, then download 0..1)
    become one fraction of the whole remote run that never goes back."""
    from ..progress import ProgressEvent

    highest = 0.0

    def forward(event: ProgressEvent) -> None:
        nonlocal highest
        fraction = min(max(float(event.fraction or 0.0), 0.0), 1.0)
        if event.stage == "upload":
            overall = UPLOAD_SHARE * fraction
        elif event.stage == "download":
            overall = 1.0 - DOWNLOAD_SHARE + DOWNLOAD_SHARE * fraction
        else:  # queued, or a stage of the job on the server
            overall = UPLOAD_SHARE + (1.0 - UPLOAD_SHARE - DOWNLOAD_SHARE) * fraction
        highest = max(highest, overall)
        callback(ProgressEvent(event.stage, round(highest, 4), event.eta_s, event.message))

    return forward


class _uploadable:
    """The file to upload: the input itself when the server takes its format, else a
    temporary gzip NRRD converted here (a DICOM folder, a detached .nhdr/.mhd header)."""

    def __init__(self, path: Path):
        self.path = path
        self._temporary: Optional[tempfile.TemporaryDirectory] = None

    def __enter__(self) -> Path:
        if self.path.is_file() and str(self.path).lower().endswith(UPLOAD_EXTENSIONS):
            return self.path
        from ..volume.io import read_volume, write_image

        image = read_volume(self.path)
        self._temporary = tempfile.TemporaryDirectory(prefix="zsdseg-upload-")
        converted = Path(self._temporary.name) / "volume.nrrd"
        write_image(image, converted)
        return converted

    def __exit__(self, *exc):
        if self._temporary is not None:
            self._temporary.cleanup()
