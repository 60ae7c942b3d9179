"""``zsdseg segment VOLUME --server URL --token-file F``: the same job, run by a server.

``segment_command`` adds these options with ``add_remote_arguments`` and calls
``run_remote_segment`` when ``--server`` is given; the VolumeRequest is built from the
same options as a local run, so both produce the same four files in the output folder.
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


def add_remote_arguments(parser) -> None:
    group = parser.add_argument_group("remote server (zsdseg serve)")
    group.add_argument("--server", metavar="URL", help="run on a zsdseg server, e.g. https://gpu.example.org; results are downloaded into the output folder")
    group.add_argument("--token-file", type=Path, metavar="F", help="file whose first line is the server token (name:token allowed); keep it chmod 600")
    group.add_argument("--server-timeout", type=float, default=None, metavar="S", help="give up if the job has not finished after S seconds (default: wait)")


def run_remote_segment(args, request: Optional[VolumeRequest] = None) -> int:
    """Runs ``args.input`` on ``args.server`` and writes the results into ``args.out_dir``.

    ``request`` is the VolumeRequest a local run would use; when None it is built from
    ``args`` by the volume command's ``request_from_args``. Progress, Ctrl-C and the summary
    behave as in a local run; Ctrl-C cancels the job on the server.
    """
    from ..volume.cli import print_summary, progress_printer, refuse_image_options, cancel_on_signals, request_from_args
    from ..volume.pipeline import check_request
    from .auth import read_client_token
    from .client import ServerClient, run_remote_job

    refuse_image_options(args)
    request = request if request is not None else request_from_args(args)
    check_request(args.input, args.out_dir, request)  # every input error, before the upload
    token = read_client_token(args.token_file) if args.token_file else None
    kind = getattr(args, "progress", None) or ("bar" if sys.stderr.isatty() else "none")
    callback, close = progress_printer(kind)
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
                result = run_remote_job(client, upload_path, args.out_dir, request, progress=callback, cancel=cancel)
    except Cancelled:
        if timed_out.is_set():
            raise UserError(f"the server did not finish within --server-timeout {timeout_s:g} s; the job was cancelled") from None
        raise
    finally:
        if timer is not None:
            timer.cancel()
        close()
    print_summary(result, kind)
    times = result.timings
    print(f"remote: upload {times['upload_s']:.1f} s, queued {times['queued_s']:.1f} s, server {times['server_s']:.1f} s, "
          f"download {times['download_s']:.1f} s", file=sys.stderr)
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
