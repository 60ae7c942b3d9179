"""The volume half of ``zsdseg segment``: its options, and running ``run_volume`` from a terminal.

``segment_command`` owns the command; it calls ``add_volume_arguments`` and, when the input is a
volume (``is_volume_path``), ``run_volume_command``. Input errors are found before the model is
loaded; Ctrl-C / SIGTERM cancel after the current batch (a second one stops at once), and nothing
half-written is left either way.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..progress import ProgressEvent
from .io import has_volume_suffix
from .request import VolumeRequest
from .slicing import AXIS_CHOICES

PROGRESS_CHOICES = ("bar", "json", "none")


def _numbers(text: str, count: int, what: str) -> tuple:
    parts = [part for part in text.replace(" ", "").split(",") if part != ""]
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"{what} takes {count} comma-separated numbers, got '{text}'")
    return values


def parse_point(text: str) -> tuple:
    return _numbers(text, 3, "a seed point X,Y,Z (mm)")


def parse_roi(text: str) -> tuple:
    return _numbers(text, 6, "--roi X0,Y0,Z0,X1,Y1,Z1")


def add_volume_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("3-D volumes (NRRD, NIfTI, MHA/MHD, DICOM folder)")
    group.add_argument("--out-dir", type=Path, help="output folder: labels.nrrd, score.nrrd, lesions.csv, provenance.json")
    group.add_argument("--seed-ras", action="append", type=parse_point, default=[], metavar="X,Y,Z",
                       help="a point inside the lesion in RAS mm (Slicer's coordinates); repeatable")
    group.add_argument("--seed-lps", action="append", type=parse_point, default=[], metavar="X,Y,Z",
                       help="a point inside the lesion in LPS mm (ITK/DICOM coordinates); repeatable")
    group.add_argument("--roi", type=parse_roi, metavar="X0,Y0,Z0,X1,Y1,Z1",
                       help="only segment inside this box: two opposite corners, in --roi-space")
    group.add_argument("--roi-space", choices=("ras", "lps", "voxel"), default="ras",
                       help="--roi corners in RAS mm, LPS mm, or voxel indices i,j,k (inclusive); default ras")
    group.add_argument("--axis", choices=AXIS_CHOICES, default="auto",
                       help="slice direction: auto = axial (the index axis closest to the patient's S axis), "
                            "a patient plane, or an index axis i/j/k")
    group.add_argument("--batch-size", type=int, help="slices per UNet pass (default: from free memory)")
    group.add_argument("--window", metavar="WIDTH/LEVEL",
                       help="CT window, e.g. 400/40 or 1500/-600, or a preset name (lung, liver, brain, bone...); "
                            "default: chosen from the prompt's words for CT, 1st-99th percentile otherwise")
    group.add_argument("--min-volume", type=float, default=0.0, metavar="MM3",
                       help="drop lesions smaller than this volume in mm3 (default 0)")
    group.add_argument("--binary", action="store_true", help="labels.nrrd as 0/1 (uint8) instead of lesion numbers 1..K")
    group.add_argument("--progress", choices=PROGRESS_CHOICES,
                       help="bar (default on a terminal), json (one JSON object per line on stdout), none")


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


def request_from_args(args) -> VolumeRequest:
    """The VolumeRequest the options describe (engine options via segment_command's own helper)."""
    from ..healthy_command import params_from_args as healthy_params_from_args
    from ..segment_command import params_from_args
    from .geometry import ras_to_lps

    ras_seeds, lps_seeds = list(args.seed_ras or []), list(args.seed_lps or [])
    roi_space = (args.roi_space or "ras").upper()
    physical_roi = args.roi if args.roi is not None and roi_space != "VOXEL" else None
    # One coordinate space per request: RAS when everything is RAS, else everything converted to LPS.
    spaces = {"RAS"} if ras_seeds else set()
    spaces |= {"LPS"} if lps_seeds else set()
    spaces |= {roi_space} if physical_roi is not None else set()
    space = "RAS" if spaces <= {"RAS"} else "LPS"
    seeds = [ras_to_lps(p) for p in ras_seeds] + lps_seeds if space == "LPS" else ras_seeds
    roi_physical = roi_voxels = None
    if physical_roi is not None:
        corners = (tuple(physical_roi[:3]), tuple(physical_roi[3:]))
        if space == "LPS" and roi_space == "RAS":
            corners = tuple(ras_to_lps(corner) for corner in corners)
        roi_physical = corners
    elif args.roi is not None:
        if any(float(v) != int(v) for v in args.roi):
            raise UserError(f"a voxel ROI takes whole indices, got {args.roi}")
        roi_voxels = (tuple(int(v) for v in args.roi[:3]), tuple(int(v) for v in args.roi[3:]))
    return VolumeRequest(
        prompt=args.prompt,
        mode=args.mode or "auto",
        seeds=[tuple(float(v) for v in seed) for seed in seeds],
        coordinate_space=space,
        roi_physical=roi_physical,
        roi_voxels=roi_voxels,
        axis=args.axis or "auto",
        window=args.window,
        batch_size=args.batch_size,
        min_volume_mm3=float(args.min_volume or 0.0),
        binary=bool(args.binary),
        params=params_from_args(args),
        pseudo_healthy=healthy_params_from_args(args, is_volume=True),
    )


def refuse_image_options(args) -> None:
    if getattr(args, "seed", None):
        raise UserError("--seed X,Y is for 2-D images; for a volume give --seed-ras X,Y,Z or --seed-lps X,Y,Z (mm)")
    image_only = [name for name in ("out", "heatmap", "labels") if getattr(args, name, None)]
    if image_only:
        raise UserError(
            f"--{', --'.join(image_only)} {'is' if len(image_only) == 1 else 'are'} for 2-D images; a volume writes "
            "labels.nrrd, score.nrrd, lesions.csv and provenance.json into --out-dir"
        )
    if args.out_dir is None:
        raise UserError("a volume needs --out-dir FOLDER for labels.nrrd, score.nrrd, lesions.csv and provenance.json")


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
    for row in result.lesions:
        print(f"  lesion {row['id']}: {row['volume_ml']:.3f} mL, {row['longest_axial_diameter_mm']:.1f} mm axial, "
              f"centre RAS ({row['centroid_ras_x']:.1f}, {row['centroid_ras_y']:.1f}, {row['centroid_ras_z']:.1f}), "
              f"mean score {row['mean_score']:.2f}")
    print(f"outputs in {result.out_dir}: {', '.join(path.name for path in result.files.values())}")


def run_volume_command(args, segmenter_factory: Callable[[], object]) -> int:
    """Check everything, load the model, run the pipeline with progress and signal handling; exit code 0."""
    from .pipeline import check_request, run_volume

    refuse_image_options(args)
    request = request_from_args(args)
    check_request(args.input, args.out_dir, request)
    kind = args.progress or ("bar" if sys.stderr.isatty() else "none")
    callback, close = progress_printer(kind)
    cancel = threading.Event()
    try:
        with cancel_on_signals(cancel):
            if callback is not None:
                callback(ProgressEvent("loading model", 0.0, None, getattr(args, "model", "")))
            segmenter = segmenter_factory()
            result = run_volume(args.input, args.out_dir, segmenter, request, progress=callback, cancel=cancel)
    finally:
        close()
    print_summary(result, kind)
    return 0
