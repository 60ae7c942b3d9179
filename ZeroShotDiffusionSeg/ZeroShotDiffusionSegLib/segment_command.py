"""``zsdseg segment``: one command for 2-D images, 3-D volumes, and a remote server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import UserError
from .healthy_command import add_pseudo_healthy_arguments, image_params, refine_image
from .image_io import labels_to_png, mask_to_png, read_image, soft_to_png, write_png

MODES = ("auto", "prompt", "seed", "unsupervised")


def parse_pixel_seed(text: str):
    try:
        x, y = (int(round(float(part))) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is X,Y in pixels (column,row), got '{text}'") from None
    return x, y


def add_engine_arguments(parser) -> None:
    """Model and algorithm options shared by every command that runs the engine."""
    from .engine.backbone import DEFAULT_MODEL

    group = parser.add_argument_group("model and algorithm")
    group.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id, local diffusers folder, or random:tiny|sd15|sd21base (default {DEFAULT_MODEL})")
    group.add_argument("--device", default="auto", help="auto (GPU if visible), cpu, cuda, cuda:N")
    group.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="auto: fp16 on GPU, fp32 on CPU")
    group.add_argument("--kl-threshold", type=float, default=1.1, help="merging threshold tau: lower gives more, smaller regions (default 1.1)")
    group.add_argument("--grid-points", type=int, default=16, help="anchor grid M x M (default 16)")
    group.add_argument("--iterations", type=int, default=3, help="merging iterations (default 3)")
    group.add_argument("--refine", action="store_true", help="K-means refinement of the merged regions")
    group.add_argument("--timestep", type=int, default=300, help="diffusion timestep of the single UNet pass (default 300)")
    group.add_argument("--noise-seed", type=int, default=None, help="add seeded noise at the timestep (default: clean latent, as DiffSeg)")
    group.add_argument("--selection-threshold", type=float, default=0.5, help="prompt mode: keep regions scoring at least this fraction of the best (default 0.5)")


def params_from_args(args):
    from .engine.types import SegmentationParams

    return SegmentationParams(kl_threshold=args.kl_threshold, grid_points=args.grid_points, iterations=args.iterations,
                              refine=args.refine, timestep=args.timestep, noise_seed=args.noise_seed,
                              selection_threshold=args.selection_threshold)


def segmenter_factory(args):
    """A callable that loads the model only when called, so input errors are reported before a slow load."""
    def load():
        from .engine import DiffusionSegmenter, load_backbone

        return DiffusionSegmenter(load_backbone(args.model, device=args.device, dtype=args.dtype))
    return load


def add_arguments(parser) -> None:
    from .server.remote_command import add_remote_arguments
    from .volume.cli import add_volume_arguments

    parser.add_argument("input", type=Path, help="2-D image (PNG, JPEG, BMP, TIFF) or volume (NRRD, NIfTI, MHA/MHD, DICOM folder)")
    parser.add_argument("--prompt", help='what to segment, e.g. "liver tumor"')
    parser.add_argument("--mode", choices=MODES, default="auto", help="auto: seed if seeds are given, else prompt")
    image = parser.add_argument_group("2-D images")
    image.add_argument("--seed", action="append", type=parse_pixel_seed, default=[], metavar="X,Y", help="pixel (column,row) inside the lesion; repeatable")
    image.add_argument("--out", type=Path, help="mask PNG (0/255); the label map in unsupervised mode")
    image.add_argument("--heatmap", type=Path, help="soft score map PNG (0..255 = 0..1)")
    image.add_argument("--labels", type=Path, help="label map PNG of all regions (pixel value = region id)")
    add_engine_arguments(parser)
    add_pseudo_healthy_arguments(parser)
    add_volume_arguments(parser)
    add_remote_arguments(parser)


def resolve_mode(mode: str, prompt, seeds) -> str:
    if mode == "auto":
        if seeds:
            return "seed"
        if prompt is not None:
            return "prompt"
        raise UserError("nothing to select: give --prompt \"...\", seed points, or --mode unsupervised")
    if mode == "prompt" and (prompt is None or not prompt.strip()):
        raise UserError("prompt mode needs a non-empty --prompt, e.g. --prompt \"skin lesion\"")
    if mode == "seed" and not seeds:
        raise UserError("seed mode needs at least one seed point")
    return mode


def run(args) -> int:
    from .server.remote_command import run_remote_segment
    from .volume.cli import is_volume_path, run_volume_command

    if getattr(args, "server", None):
        return run_remote_segment(args)
    if is_volume_path(args.input):
        return run_volume_command(args, segmenter_factory(args))
    return run_image(args)


def run_image(args) -> int:
    from .engine.selection import validate_seeds

    image = read_image(args.input)
    mode = resolve_mode(args.mode, args.prompt, args.seed)
    height, width = image.shape[:2]
    validate_seeds(args.seed, width, height)  # before the slow model load
    if mode == "unsupervised" and not (args.out or args.labels):
        raise UserError("unsupervised mode needs --out or --labels for the label map")
    if mode != "unsupervised" and not args.out:
        raise UserError("give --out mask.png for the mask")
    for path in (args.out, args.heatmap, args.labels):
        if path is not None and not Path(path).resolve().parent.is_dir():
            raise UserError(f"output folder does not exist: {Path(path).resolve().parent}")
    params = params_from_args(args)
    healthy_params = image_params(args, mode)
    segmenter = segmenter_factory(args)()
    prompt = args.prompt if mode != "unsupervised" and args.prompt and args.prompt.strip() else None
    seeds = [args.seed] if mode == "seed" else None
    result = segmenter.segment_batch([image], prompt=prompt, seeds=seeds, params=params)[0]
    if healthy_params is not None:
        refine_image(args, segmenter, image, result, healthy_params, prompt)
    regions = int(result.labels.max()) + 1
    if mode == "unsupervised":
        for path in {path for path in (args.out, args.labels) if path}:
            write_png(path, labels_to_png(result.labels))
        print(f"{regions} regions -> {args.out or args.labels}")
    else:
        write_png(args.out, mask_to_png(result.mask))
        chosen = len(set(result.labels[result.mask].tolist()))
        print(f"mask: {int(result.mask.sum())} pixels ({100.0 * result.mask.mean():.1f}%), {chosen} of {regions} regions -> {args.out}")
        if args.labels:
            write_png(args.labels, labels_to_png(result.labels))
    if args.heatmap:
        if result.soft is None:
            print("no heat map in unsupervised mode", file=sys.stderr)
        else:
            write_png(args.heatmap, soft_to_png(result.soft))
    return 0
