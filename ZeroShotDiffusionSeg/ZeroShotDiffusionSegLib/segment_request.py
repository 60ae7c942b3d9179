"""From parsed ``zsdseg segment`` options to a validated request, with no model loaded.

``params_from_args`` and ``volume_request_from_args`` only gather values: the ranges are checked
by ``SegmentationParams`` and ``VolumeRequest`` themselves. The ``refuse_*`` functions turn away
options that do nothing for the chosen input, with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError
from .volume.request import VolumeRequest


def params_from_args(args):
    from .engine.types import SegmentationParams

    return SegmentationParams(kl_threshold=args.kl_threshold, grid_points=args.grid_points, iterations=args.iterations,
                              refine=args.refine, timestep=args.timestep, noise_seed=args.noise_seed,
                              selection_threshold=args.selection_threshold, anomaly_temperature=args.anomaly_temperature)


def volume_request_from_args(args) -> VolumeRequest:
    """The VolumeRequest the options describe, in one coordinate space (RAS unless any point is LPS)."""
    from .healthy_command import params_from_args as healthy_params_from_args
    from .volume.geometry import ras_to_lps

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
    elif args.roi is not None:  # VolumeRequest refuses indices that are not whole numbers
        roi_voxels = (tuple(args.roi[:3]), tuple(args.roi[3:]))
    return VolumeRequest(
        prompt=args.prompt,
        normal_prompt=args.normal_prompt,
        mode=args.mode or "auto",
        seeds=[tuple(seed) for seed in seeds],
        coordinate_space=space,
        roi_physical=roi_physical,
        roi_voxels=roi_voxels,
        axis=args.axis or "auto",
        window=args.window,
        batch_size=args.batch_size,
        min_volume_mm3=args.min_volume if args.min_volume is not None else 0.0,
        binary=bool(args.binary),
        boundary=getattr(args, "boundary", "none"),
        boundary_points=bool(getattr(args, "boundary_points", False)),
        series_uid=getattr(args, "series_uid", None),
        params=params_from_args(args),
        pseudo_healthy=healthy_params_from_args(args, is_volume=True),
    )


def refuse_image_options(args) -> None:
    """A volume: refuse the 2-D image options, and require --out-dir."""
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


def refuse_volume_options(args, mode: str) -> None:
    """A 2-D image: refuse the options that would do nothing, each with the reason."""
    volume_only = [flag for flag, name in (("--seed-ras", "seed_ras"), ("--seed-lps", "seed_lps"), ("--roi", "roi"),
                                           ("--out-dir", "out_dir"), ("--window", "window"), ("--batch-size", "batch_size"),
                                           ("--binary", "binary"), ("--cache-dir", "cache_dir")) if getattr(args, name, None)]
    if getattr(args, "cache_mb", None) is not None:
        volume_only.append("--cache-mb")
    if getattr(args, "min_volume", 0.0):
        volume_only.append("--min-volume")
    if getattr(args, "progress", None) == "json":
        volume_only.append("--progress json")
    if volume_only:
        # Only the 2-D counterparts of what was given: a prompt works on an image as it is.
        instead = [hint for given, hint in ((getattr(args, "seed_ras", None) or getattr(args, "seed_lps", None), "--seed X,Y in pixels"),
                                            (getattr(args, "out_dir", None), "--out mask.png")) if given]
        raise UserError(f"{', '.join(volume_only)} {'is' if len(volume_only) == 1 else 'are'} for 3-D volumes; "
                        f"{args.input.name} is a 2-D image" + (f" (give {' and '.join(instead)})" if instead else ""))
    if mode == "unsupervised" and args.prompt is not None:
        raise UserError("--prompt does nothing with --mode unsupervised (every region is kept); leave one of them out")


def check_image_outputs(args) -> None:
    """Every 2-D output path can be written as a PNG file: checked before the model loads."""
    for flag, path in (("--out", args.out), ("--heatmap", args.heatmap), ("--labels", args.labels)):
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            raise UserError(f"{flag} {path} is a folder; give a file name ending in .png")
        if path.suffix.lower() != ".png":
            raise UserError(f"{flag} {path.name}: outputs are written as PNG; give a name ending in .png")
        folder = path.resolve().parent
        if not folder.is_dir():
            raise UserError(f"output folder does not exist: {folder}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"cannot write {flag} {path}: the folder {folder} is not writable")
