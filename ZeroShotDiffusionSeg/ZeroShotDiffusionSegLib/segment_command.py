"""``zsdseg segment``: one command for 2-D images, 3-D volumes, and a remote server.

The command runs in one direction: the options are parsed (``segment_options``), turned into a
validated request (``segment_request``, ``SegmentationParams``, ``VolumeRequest``) and checked
against the input, all before any model loads; then the request runs here (2-D image), in
``volume.cli`` (a local volume) or in ``server.remote_command`` (a volume on a server).
"""

from __future__ import annotations

import sys

from .errors import UserError
from .segment_options import add_arguments  # noqa: F401  (the subcommand's options, for cli.py)


def segmenter_factory(args):
    """A callable that loads the model only when called, so input errors are reported before a slow load."""
    def load():
        from .engine import DiffusionSegmenter, load_backbone

        return DiffusionSegmenter(load_backbone(args.model, device=args.device, dtype=args.dtype))
    return load


def run(args, load_segmenter=None) -> int:
    """``load_segmenter``: a callable returning a segmenter (default: the model named by --model)."""
    from .segment_request import params_from_args, refuse_image_options, volume_request_from_args
    from .volume.cli import is_volume_path

    load_segmenter = load_segmenter or segmenter_factory(args)
    if getattr(args, "server", None):
        from .server.protocol import check_server_url

        check_server_url(args.server)
        if getattr(args, "boundary", "none") != "none":
            raise UserError("--boundary sam runs on this machine only; drop --server, or use --boundary none")
    if not is_volume_path(args.input):
        if getattr(args, "server", None):
            raise UserError(f"the server segments volumes (NRRD, NIfTI, MHA/MHD, DICOM folder); {args.input.name} is a 2-D image: "
                            "leave out --server to segment it here")
        return run_image(args, params_from_args(args), load_segmenter)
    refuse_image_options(args)
    request = volume_request_from_args(args)
    if getattr(args, "server", None):
        from .dicom.export import refuse_remote_dicom
        from .server.remote_command import run_remote_segment

        refuse_remote_dicom(args)
        if getattr(args, "cache_dir", None) is not None or getattr(args, "cache_mb", None) is not None:
            raise UserError("--cache-dir is for a run here; a server keeps its jobs' passes itself "
                            "(re-prompt a finished job with POST /jobs/{id}/prompt)")
        return run_remote_segment(args, request)
    from .volume.cli import run_volume_command

    return run_volume_command(args, request, load_segmenter)


def resolve_image_mode(mode: str, prompt, seeds) -> str:
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


def run_image(args, params, load_segmenter) -> int:
    """A 2-D image: every check (options, outputs, seeds) before the model loads, then one engine call."""
    from .engine.prompt_length import segmenter_prompt_note
    from .boundary_command import check_image_boundary, refine_image_mask
    from .engine.selection import validate_seeds
    from .healthy_command import image_params, refine_image
    from .image_io import mask_to_png, read_image, soft_to_png, write_labels_png, write_png
    from .prompt_words import normal_prompt_for
    from .segment_request import check_image_outputs, refuse_volume_options

    refuse_volume_options(args, args.mode)
    mode = resolve_image_mode(args.mode, args.prompt, args.seed)
    if mode == "unsupervised" and not (args.out or args.labels):
        raise UserError("unsupervised mode needs --out or --labels for the label map")
    if mode != "unsupervised" and not args.out:
        raise UserError("give --out mask.png for the mask")
    check_image_outputs(args)
    image = read_image(args.input)
    height, width = image.shape[:2]
    seeds = list(args.seed)
    validate_seeds(seeds, width, height)
    check_image_boundary(args, mode)
    healthy_params = image_params(args, mode)
    segmenter = load_segmenter()
    prompt = args.prompt if mode != "unsupervised" and args.prompt and args.prompt.strip() else None
    normal_prompt = normal_prompt_for(prompt, args.normal_prompt) if prompt else None
    note = segmenter_prompt_note(segmenter, prompt)
    if note:
        print(f"zsdseg: note: {note}", file=sys.stderr)
    result = segmenter.segment_batch([image], prompt=prompt, seeds=[seeds] if mode == "seed" else None, params=params,
                                     normal_prompt=normal_prompt)[0]
    regions = int(result.labels.max()) + 1
    if mode == "unsupervised":
        for path in {path for path in (args.out, args.labels) if path}:
            write_labels_png(path, result.labels)
        print(f"{regions} regions -> {args.out or args.labels}")
    else:
        if args.boundary == "sam":
            result.mask = refine_image_mask(args, image, result, seeds if mode == "seed" else None)
        if healthy_params is not None:  # after the boundary: the counterfactual repaints the final candidate
            refine_image(args, segmenter, image, result, healthy_params, prompt)
        write_png(args.out, mask_to_png(result.mask))
        chosen = len(set(result.labels[result.mask].tolist()))
        print(f"mask: {int(result.mask.sum())} pixels ({100.0 * result.mask.mean():.1f}%), {chosen} of {regions} regions -> {args.out}")
        if args.labels:
            write_labels_png(args.labels, result.labels)
    if args.heatmap:
        if result.soft is None:
            print("no heat map in unsupervised mode", file=sys.stderr)
        else:
            write_png(args.heatmap, soft_to_png(result.soft))
    return 0
