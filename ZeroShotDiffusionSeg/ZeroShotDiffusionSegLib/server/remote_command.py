"""``zsdseg segment VOLUME --server URL --token-file F``: the same job, run by a server.

``segment_command`` adds these options with ``add_remote_arguments`` and calls
``run_remote_segment`` when ``--server`` is given; the VolumeRequest is built from the
same options as a local run, so both produce the same four files in the output folder.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from ..errors import Cancelled, UserError
from ..progress import ProgressEvent
from ..volume.request import VolumeRequest
from .protocol import UPLOAD_EXTENSIONS


def add_remote_arguments(parser) -> None:
    group = parser.add_argument_group("remote server (zsdseg serve)")
    group.add_argument("--server", metavar="URL", help="run on a zsdseg server, e.g. https://gpu.example.org; results are downloaded into the output folder")
    group.add_argument("--token-file", type=Path, metavar="F", help="file whose first line is the server token (name:token allowed); keep it chmod 600")
    group.add_argument("--server-timeout", type=float, default=None, metavar="S", help="give up if the job has not finished after S seconds (default: wait)")


def run_remote_segment(args, request: Optional[VolumeRequest] = None) -> int:
    """Runs ``args.input`` on ``args.server`` and writes the results into ``args.out_dir``.

    ``request`` is the VolumeRequest a local run would use; when None it is built from
    ``args`` by the volume command's own ``request_from_args``.
    """
    from .auth import read_client_token
    from .client import ServerClient, run_remote_job

    input_path = Path(args.input)
    out_dir = getattr(args, "out_dir", None)
    if out_dir is None:
        raise UserError("give the output folder (--out-dir) for the results downloaded from the server")
    if request is None:
        from ..volume.cli import request_from_args

        request = request_from_args(args)
    token = read_client_token(args.token_file) if args.token_file else None
    timeout_s = getattr(args, "server_timeout", None)
    cancel = threading.Event()  # set by the --server-timeout timer; Ctrl-C deletes (so cancels) the job instead
    timer = threading.Timer(timeout_s, cancel.set) if timeout_s else None
    with ServerClient(args.server, token=token) as client, _uploadable(input_path) as upload_path:
        info = client.handshake()
        print(f"server {args.server}: model {info['model_id']} on {info['device']}, {info['queue_length']} job(s) queued", file=sys.stderr)
        if timer is not None:
            timer.start()
        try:
            result = run_remote_job(client, upload_path, out_dir, request, progress=_StderrProgress(), cancel=cancel)
        except Cancelled:
            if not cancel.is_set():
                raise  # cancelled on the server, not by the timer
            raise UserError(f"the server did not finish within --server-timeout {timeout_s:.0f} s; the job was cancelled") from None
        finally:
            if timer is not None:
                timer.cancel()
    print(f"{len(result.lesions)} lesion(s) -> {Path(out_dir)} (upload {result.timings['upload_s']:.1f} s, "
          f"queued {result.timings['queued_s']:.1f} s, server {result.timings['server_s']:.1f} s, download {result.timings['download_s']:.1f} s)")
    for message in result.messages:
        print(message, file=sys.stderr)
    return 0


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


class _StderrProgress:
    """One stderr line per stage change or 10% step, not one per event."""

    def __init__(self):
        self._last = (None, -1)
        self._started = time.monotonic()

    def __call__(self, event: ProgressEvent) -> None:
        step = int(event.fraction * 10)
        if (event.stage, step) == self._last:
            return
        self._last = (event.stage, step)
        eta = f", eta {event.eta_s:.0f} s" if event.eta_s is not None else ""
        detail = f" ({event.message})" if event.message else ""
        print(f"[{time.monotonic() - self._started:6.1f} s] {event.stage} {100 * event.fraction:3.0f}%{eta}{detail}", file=sys.stderr)
