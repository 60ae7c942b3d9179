"""Helpers for the server tests: tiny synthetic volumes, a deterministic stand-in executor
with run_volume's signature, and a real uvicorn server on 127.0.0.1 in a thread.

(Named test_server_* so it belongs with the server tests; it holds no tests itself.)
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.progress import ProgressTracker, check_cancel
from ZeroShotDiffusionSegLib.volume.consolidation import LESION_COLUMNS
from ZeroShotDiffusionSegLib.volume.outputs import write_lesions_csv
from ZeroShotDiffusionSegLib.volume.request import VolumeResult

TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef0"}


def make_volume(path: Path, seed: int = 0, shape=(6, 20, 24), spacing=(0.8, 0.8, 2.5)) -> Path:
    """A small CT-like volume with a bright blob whose position depends on ``seed``."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    k, j, i = np.mgrid[: shape[0], : shape[1], : shape[2]]
    centre = (shape[0] / 2, 5 + seed % (shape[1] - 10), 5 + (3 * seed) % (shape[2] - 10))
    blob = ((k - centre[0]) ** 2 / 4 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2) < 12
    array = (rng.normal(40, 10, shape) + 200 * blob).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 20.0, 5.0 + seed))
    sitk.WriteImage(image, str(path), True)
    return path


def stand_in_executor(input_path, out_dir, request, progress=None, cancel=None) -> VolumeResult:
    """Deterministic stand-in for run_volume: reads the volume, thresholds it slice by slice
    (a 'batch' per slice, checking cancel between them) and writes the four outputs.

    ``request.prompt == "wait-for-cancel"`` keeps it in the slice loop until cancelled
    (bounded), so the cancel test does not depend on timing; "fail" and "crash" raise a
    UserError and a bug-like RuntimeError after the first slice.
    """
    import SimpleITK as sitk

    image = sitk.ReadImage(str(input_path))
    if image.GetDimension() != 3:
        raise UserError("stand-in: need a 3-D volume")
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    threshold = float(array.mean() + array.std())
    labels = np.zeros(array.shape, np.uint8)
    tracker = ProgressTracker(progress, array.shape[0], "segmenting")
    tracker.update(0)
    for index in range(array.shape[0]):
        check_cancel(cancel)
        labels[index] = array[index] > threshold
        if request.prompt == "fail":
            raise UserError("stand-in: nothing to segment in this volume")
        if request.prompt == "crash":
            raise RuntimeError("stand-in bug with a /secret/server/path in its message")
        if request.prompt == "wait-for-cancel":
            deadline = time.monotonic() + 20
            while not (cancel is not None and cancel.is_set()) and time.monotonic() < deadline:
                time.sleep(0.01)
        tracker.update(index + 1)
    score = (array - array.min()) / max(float(np.ptp(array)), 1.0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {name: out_dir / file for name, file in
             {"labels": "labels.nrrd", "score": "score.nrrd", "lesions": "lesions.csv", "provenance": "provenance.json"}.items()}
    for name, values in (("labels", labels), ("score", score.astype(np.float32))):
        output = sitk.GetImageFromArray(values)
        output.CopyInformation(image)
        sitk.WriteImage(output, str(files[name]), True)
    # One row in the real lesion table's columns; mean_score encodes the prompt's length so
    # that each client's result is told apart by value.
    rows = [{column: 0.0 for column in LESION_COLUMNS}]
    rows[0].update(id=1, voxels=int(labels.sum()), volume_ml=float(labels.sum()) * float(np.prod(image.GetSpacing())) / 1000,
                   mean_score=len(request.prompt or "") / 100)
    write_lesions_csv(rows, files["lesions"])
    provenance = {"model": "stand-in", "input_sha256": hashlib.sha256(array.tobytes()).hexdigest(),
                  "request": request.to_dict(), "timings": {"total_s": time.perf_counter()}}
    files["provenance"].write_text(json.dumps(provenance, indent=2, sort_keys=True))
    return VolumeResult(out_dir=out_dir, files=files, lesions=rows, timings={}, messages=["stand-in ran"])


def stand_in_info() -> dict:
    return {"model_id": "stand-in", "provenance": {"model_id": "stand-in", "weights_sha256": {}}, "device": "cpu", "gpu_memory": None}


def without_timings(provenance_text: str) -> dict:
    data = json.loads(provenance_text)
    data.pop("timings", None)
    return data


class ServerThread:
    """A real uvicorn server for ``app`` on 127.0.0.1 and a free port, in a thread."""

    def __init__(self, app, **uvicorn_options):
        import uvicorn

        self.app = app
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options = {"log_level": "warning", "lifespan": "on", "timeout_graceful_shutdown": 5, **uvicorn_options}
        config = uvicorn.Config(app, **options)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self):
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self._thread.join(20)
        self._socket.close()
        assert not self._thread.is_alive(), "uvicorn did not stop"


def start_server(tmp_path, executors=None, info=stand_in_info, tokens=TOKENS, uvicorn_options=None, **settings):
    """A ServerThread running create_app with the stand-in executor (and the given settings)."""
    from ZeroShotDiffusionSegLib.server.app import ServerSettings, create_app
    from ZeroShotDiffusionSegLib.server.auth import TokenStore

    store = TokenStore({token: name for name, token in tokens.items()}) if tokens else None
    settings.setdefault("work_parent", tmp_path / "server-work")
    app = create_app(ServerSettings(tokens=store, **settings), executors or [stand_in_executor], info)
    return ServerThread(app, **(uvicorn_options or {}))


def leftover_files(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def volume(tmp_path):
    return make_volume(tmp_path / "ct.nrrd", seed=1)
