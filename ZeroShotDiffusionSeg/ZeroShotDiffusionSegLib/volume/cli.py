"""Running ``run_volume`` from a terminal: progress display, signal handling, the summary.

``segment_command`` hands ``run_volume_command`` a validated VolumeRequest; input errors are
found here before the model is loaded. Ctrl-C / SIGTERM cancel after the current batch (a second
one stops at once), and nothing half-written is left either way. ``server.remote_command`` uses
the same progress, signal and summary helpers for a job run on a server.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from ..errors import Cancelled, UserError
from ..progress import ProgressEvent
from .io import has_volume_suffix
from .request import VolumeRequest

def is_volume_path(path) -> bool:
    """True for a folder (a DICOM series) or a volume file; a 2-D NRRD/NIfTI/MHA stays with the 2-D path.

    An unreadable file with a volume suffix counts as a volume, so the volume reader reports why.
    """
    path = Path(path)
    if path.is_dir():
        return True
    if not has_volume_suffix(path):
        return False
    if not path.is_file():
        return True
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return True
    return reader.GetDimension() != 2


@contextmanager
def json_outcome(kind: str):
    """With ``--progress json``, a consumer of stdout sees how a run ended that did not finish:
    ``{"event": "error", "message"}`` or ``{"event": "cancelled"}`` (the error also goes to stderr as usual)."""
    try:
        yield
    except (Cancelled, KeyboardInterrupt):
        if kind == "json":
            print(json.dumps({"event": "cancelled"}), flush=True)
        raise
    except UserError as error:
        if kind == "json":
            print(json.dumps({"event": "error", "message": str(error)}), flush=True)
        raise


def progress_printer(kind: str):
    """(callback, close) for the chosen progress style."""
    if kind == "json":
        def emit(event: ProgressEvent) -> None:
            print(event.to_json(), flush=True)
        return emit, lambda: None
    if kind == "bar":
        from tqdm import tqdm

        bar = tqdm(total=100, file=sys.stderr, unit="%", bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

        def show(event: ProgressEvent) -> None:
            bar.set_description_str(event.stage, refresh=False)
            bar.n = int(round(event.fraction * 100))
            bar.refresh()
        return show, bar.close
    return None, lambda: None


@contextmanager
def cancel_on_signals(cancel: threading.Event):
    """SIGINT/SIGTERM set ``cancel`` (the run stops after the current batch); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handle(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("zsdseg: stopping after the current batch (again to stop now)", file=sys.stderr, flush=True)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


LESIONS_PRINTED = 20  # a terminal shows the largest lesions; the table holds them all


def print_summary(result, kind: str) -> None:
    if kind == "json":
        print(json.dumps({
            "event": "done",
            "out_dir": str(result.out_dir),
            "files": {key: str(path) for key, path in result.files.items()},
            "lesions": len(result.lesions),
            "messages": result.messages,
        }), flush=True)
        return
    for message in result.messages:
        print(message)
    for row in result.lesions[:LESIONS_PRINTED]:
        print(f"  lesion {row['id']}: {row['volume_ml']:.3f} mL, {row['longest_axial_diameter_mm']:.1f} mm axial, "
              f"centre RAS ({row['centroid_ras_x']:.1f}, {row['centroid_ras_y']:.1f}, {row['centroid_ras_z']:.1f}), "
              f"mean score {row['mean_score']:.2f}")
    if len(result.lesions) > LESIONS_PRINTED:  # lesions come largest first: what is left out is the smallest
        print(f"  ... and {len(result.lesions) - LESIONS_PRINTED} smaller lesion(s): every lesion is in lesions.csv")
    print(f"outputs in {result.out_dir}: {', '.join(path.name for path in result.files.values())}")


def query_cache_from_args(args):
    """The on-disk query cache of --cache-dir (None without it); --cache-mb alone is refused."""
    from .query_cache import DEFAULT_LIMIT_MB, QueryCache

    if getattr(args, "cache_dir", None) is None:
        if getattr(args, "cache_mb", None) is not None:
            raise UserError("--cache-mb bounds --cache-dir; give --cache-dir DIR too")
        return None
    return QueryCache(args.cache_mb if args.cache_mb is not None else DEFAULT_LIMIT_MB, args.cache_dir)


def run_volume_command(args, request: VolumeRequest, segmenter_factory: Callable[[], object]) -> int:
    """Check the input against the request, load the model, run the pipeline with progress and signal handling."""
    from ..dicom.export import check_dicom_args, write_dicom_args
    from .pipeline import check_request, run_volume

    kind = args.progress or ("bar" if sys.stderr.isatty() else "none")
    with json_outcome(kind):
        check_request(args.input, args.out_dir, request)
        check_dicom_args(args, request)
        cache = query_cache_from_args(args)
        callback, close = progress_printer(kind)
        cancel = threading.Event()
        try:
            with cancel_on_signals(cancel):
                if callback is not None:
                    callback(ProgressEvent("loading model", 0.0, None, getattr(args, "model", "")))
                segmenter = segmenter_factory()
                result = run_volume(args.input, args.out_dir, segmenter, request, progress=callback, cancel=cancel, cache=cache)
                write_dicom_args(args, result, request)
        finally:
            close()
    print_summary(result, kind)
    return 0
