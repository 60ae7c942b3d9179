"""The options of ``zsdseg segment``, one function per option group, and the parsers of their values.

This module only parses: it turns text into numbers and tuples. Whether a value is allowed is
decided once, by ``SegmentationParams`` / ``VolumeRequest`` (``segment_request`` builds them), so
the command line, the worker and the server refuse the same things with the same words.
A new option goes into the group it belongs to, and its field into ``segment_request``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

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


def parse_pixel_seed(text: str) -> tuple:
    """X,Y in pixels, rounded to the nearest pixel; whether it is inside the image is checked with the image."""
    values = _numbers(text, 2, "a seed X,Y in pixels (column,row)")
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"a seed X,Y in pixels takes finite numbers, got '{text}'")
    return tuple(int(round(v)) for v in values)


def parse_point(text: str) -> tuple:
    return _numbers(text, 3, "a seed point X,Y,Z (mm)")


def parse_roi(text: str) -> tuple:
    return _numbers(text, 6, "--roi X0,Y0,Z0,X1,Y1,Z1")


def add_input_arguments(parser) -> None:
    from .volume.request import MODES

    parser.add_argument("input", type=Path, help="2-D image (PNG, JPEG, BMP, TIFF) or volume (NRRD, NIfTI, MHA/MHD, DICOM folder)")
    parser.add_argument("--prompt", help='what to segment, e.g. "liver tumor" (the text encoder reads at most 75 tokens)')
    parser.add_argument("--mode", choices=MODES, default="auto", help="auto: seed if seeds are given, else prompt")


def add_image_arguments(parser) -> None:
    image = parser.add_argument_group("2-D images")
    image.add_argument("--seed", action="append", type=parse_pixel_seed, default=[], metavar="X,Y",
                       help="pixel (column,row) inside the lesion; repeatable")
    image.add_argument("--out", type=Path, help="mask PNG (0/255); the label map in unsupervised mode; an existing file is replaced")
    image.add_argument("--heatmap", type=Path, help="soft score map PNG (0..255 = 0..1); an existing file is replaced")
    image.add_argument("--labels", type=Path, help="label map PNG of all regions (pixel value = region id 1..K); an existing file is replaced")


def add_engine_arguments(parser) -> None:
    """Model and algorithm options shared by every command that runs the engine (ranges: SegmentationParams)."""
    from .engine.backbone import DEFAULT_MODEL

    group = parser.add_argument_group("model and algorithm")
    group.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id, local diffusers folder, or random:tiny|sd15|sd21base (default {DEFAULT_MODEL})")
    group.add_argument("--device", default="auto", help="auto (GPU if visible), cpu, cuda, cuda:N")
    group.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="auto: fp16 on GPU, fp32 on CPU")
    group.add_argument("--kl-threshold", type=float, default=1.1, help="merging threshold tau in (0, 100]: lower gives more, smaller regions (default 1.1)")
    group.add_argument("--grid-points", type=int, default=16, help="anchor grid M x M, M in 1..64 (default 16)")
    group.add_argument("--iterations", type=int, default=3, help="merging iterations, 1..20 (default 3)")
    group.add_argument("--refine", action="store_true", help="K-means refinement of the merged regions")
    group.add_argument("--timestep", type=int, default=300, help="diffusion timestep of the single UNet pass, 0..999 (default 300)")
    group.add_argument("--noise-seed", type=int, default=None, help="add seeded noise at the timestep (default: clean latent, as DiffSeg)")
    group.add_argument("--selection-threshold", type=float, default=0.5, help="prompt mode: keep regions scoring at least this fraction of the best, 0..1 (default 0.5)")
    group.add_argument("--normal-prompt", metavar="TEXT", help="healthy counterpart the prompt is contrasted with (default: from the "
                       "prompt's preset or organ word, e.g. 'healthy liver'; 'healthy tissue' without one); 'none': plain prompt score")
    group.add_argument("--anomaly-temperature", type=float, default=1.0, help="softmax temperature of prompt against normal prompt, "
                       "in (0, 100] (default 1: the abnormal prompt's share of the two maps; lower is sharper)")


def add_volume_arguments(parser) -> None:
    from .volume.slicing import AXIS_CHOICES

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
    group.add_argument("--batch-size", type=int, help="slices per UNet pass, 1..256 (default: from free memory)")
    group.add_argument("--window", metavar="WIDTH/LEVEL",
                       help="CT window, e.g. 400/40 or 1500/-600, or a preset name (lung, liver, brain, bone...); "
                            "default: chosen from the prompt's words for CT, 1st-99th percentile otherwise")
    group.add_argument("--min-volume", type=float, default=0.0, metavar="MM3",
                       help="drop lesions smaller than this volume in mm3, finite and >= 0 (default 0)")
    group.add_argument("--binary", action="store_true", help="labels.nrrd as 0/1 (uint8) instead of lesion numbers 1..K")
    group.add_argument("--cache-dir", type=Path, metavar="DIR",
                       help="keep each volume's unconditional pass here: another prompt on the same volume and settings "
                            "loads it instead of running the model")
    group.add_argument("--cache-mb", type=float, default=None, metavar="MB",
                       help="bound of --cache-dir, least recently used volumes dropped first (default 4096)")
    group.add_argument("--progress", choices=PROGRESS_CHOICES,
                       help="bar (default on a terminal), json (one JSON object per line on stdout), none")


def add_remote_arguments(parser) -> None:
    group = parser.add_argument_group("remote server (zsdseg serve; volumes only)")
    group.add_argument("--server", metavar="URL", help="run on a zsdseg server, e.g. https://gpu.example.org; results are downloaded into the output folder")
    group.add_argument("--token-file", type=Path, metavar="F", help="file whose first line is the server token (name:token allowed); keep it chmod 600")
    group.add_argument("--server-timeout", type=float, default=None, metavar="S", help="give up if the job has not finished after S seconds (default: wait)")


def add_arguments(parser) -> None:
    """Every option of ``zsdseg segment``, group by group."""
    from .dicom.export import add_dicom_seg_arguments

    add_input_arguments(parser)
    add_image_arguments(parser)
    from .boundary_command import add_boundary_arguments
    from .healthy_command import add_pseudo_healthy_arguments

    add_engine_arguments(parser)
    add_boundary_arguments(parser)
    add_pseudo_healthy_arguments(parser)
    add_volume_arguments(parser)
    add_dicom_seg_arguments(parser)
    add_remote_arguments(parser)
