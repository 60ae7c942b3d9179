"""What client and server agree on: protocol version, result names, upload formats and
the JSON form of a ``VolumeRequest``.

No FastAPI or pydantic here, so the client side -- the CLI and the Slicer module's
remote runner -- needs nothing beyond the library and httpx.
"""

from __future__ import annotations

import json
from typing import Optional, Tuple

from ..errors import UserError
from ..runners.protocol import request_from_dict  # the worker's decoder: one inverse of to_dict()
from ..volume.outputs import ALL_OUTPUT_NAMES
from ..volume.request import VolumeRequest

# MAJOR.MINOR. A client and a server work together when MAJOR is equal; MINOR grows
# with backwards-compatible additions (a new optional field, a new endpoint).
PROTOCOL_VERSION = "1.1"  # 1.1: the results healthy and residual
PROTOCOL_HEADER = "X-ZSDSeg-Protocol"

# Job states, in the order a job may pass through them.
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
TERMINAL_STATES = (DONE, FAILED, CANCELLED)

# Result name (URL segment, and key of VolumeResult.files) -> file name in the job's output. A job has the
# four of every run; healthy and residual only when its request asks for them (``pseudo_healthy``). A job's
# status lists the ones it has, and the client fetches those.
RESULT_FILES = ALL_OUTPUT_NAMES

# Upload formats the server accepts: the single-file ones of volume.io.VOLUME_SUFFIXES
# (a detached .nhdr/.mhd header needs a second file). Only this suffix of the client's file name is ever
# used on the server; the name itself never touches the server's filesystem.
UPLOAD_EXTENSIONS = (".nii.gz", ".nrrd", ".nii", ".mha")
# A request is a few hundred characters; this bounds the parsing work a client can ask for.
MAX_REQUEST_CHARS = 100_000


# The minor protocol version that added a result name. A client that announces an older minor version is
# not offered it: it would not know what to call the file (1.0 clients stop at an unknown name).
RESULTS_SINCE_MINOR = {"healthy": 1, "residual": 1}


def results_known_to(version: Optional[str]) -> Tuple[str, ...]:
    """The result names a client announcing protocol ``version`` knows; all of them when it announced none
    (curl, a browser: they read the names as text)."""
    if not version:
        return tuple(RESULT_FILES)
    try:
        minor = int(str(version).split(".")[1])
    except (IndexError, ValueError):
        minor = 0
    return tuple(name for name in RESULT_FILES if RESULTS_SINCE_MINOR.get(name, 0) <= minor)


def protocol_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise UserError(f"malformed protocol version {version!r}") from None


def is_compatible(version: str) -> bool:
    return protocol_major(version) == protocol_major(PROTOCOL_VERSION)


def check_server_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host, else a UserError that says what a server URL looks like."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(str(url).strip())
        parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UserError(f"--server takes an http:// or https:// URL with a host, e.g. https://gpu.example.org:8000; "
                        f"got {str(url)[:80]!r}")
    return str(url).strip()


def upload_extension(filename: Optional[str]) -> str:
    """The allow-listed extension of an uploaded file's name, or a UserError."""
    lowered = (filename or "").lower()
    for extension in UPLOAD_EXTENSIONS:
        if lowered.endswith(extension):
            return extension
    raise UserError(
        f"unsupported volume file type {lowered.rsplit('/', 1)[-1][-40:]!r}: "
        f"the server accepts {', '.join(UPLOAD_EXTENSIONS)} (NRRD may be gzip-encoded)"
    )


def request_to_json(request: VolumeRequest) -> str:
    return json.dumps(request.to_dict(), sort_keys=True)


def request_from_json(text: str) -> VolumeRequest:
    """A VolumeRequest from the JSON a client sent; any malformed value is a one-line UserError (a 400)."""
    if len(text or "") > MAX_REQUEST_CHARS:
        raise UserError(f"the request field is longer than {MAX_REQUEST_CHARS} characters")
    try:
        data = json.loads(text) if text and text.strip() else {}
    except json.JSONDecodeError as error:
        raise UserError(f"the request field is not valid JSON: {error.msg} at character {error.pos}") from None
    except RecursionError:
        raise UserError("the request field is nested too deeply") from None
    return request_from_dict(data)
