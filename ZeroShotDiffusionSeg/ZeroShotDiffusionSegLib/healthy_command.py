"""``zsdseg segment --pseudo-healthy``: the options, their checks (before the model loads), and the
2-D run (the volume run is ``volume.healthy``)."""

from __future__ import annotations

from pathlib import Path

from .engine import healthy_params as defaults
from .errors import UserError
import numpy as np

from .image_io import soft_to_png, write_png

IMAGE_OUTPUTS = ("healthy_out", "residual_out")


def add_pseudo_healthy_arguments(parser) -> None:
    group = parser.add_argument_group(
        "pseudo-healthy refinement (training-free DiffuGTS-style; slow: many UNet steps per slice)")
    group.add_argument("--pseudo-healthy", action="store_true",
                       help="refine the selected lesion: repaint it as healthy tissue with the same model and keep what "
                            "differs (volumes also write healthy.nrrd and residual.nrrd)")
    group.add_argument("--healthy-dilation", type=float, default=defaults.DEFAULT_DILATION_MM, metavar="MM",
                       help="grow the candidate by this much before repainting; pixels for a 2-D image "
                            f"(default {defaults.DEFAULT_DILATION_MM:g})")
    group.add_argument("--healthy-strength", type=float, default=defaults.DEFAULT_STRENGTH,
                       help=f"noise level the repaint starts from, 0..1 (default {defaults.DEFAULT_STRENGTH:g})")
    group.add_argument("--healthy-steps", type=int, default=defaults.DEFAULT_STEPS,
                       help=f"DDIM schedule length; int(steps x strength) steps run (default {defaults.DEFAULT_STEPS})")
    group.add_argument("--healthy-guidance", type=float, default=defaults.DEFAULT_GUIDANCE,
                       help=f"classifier-free guidance toward the normal prompt (default {defaults.DEFAULT_GUIDANCE:g})")
    group.add_argument("--healthy-seed", type=int, default=defaults.DEFAULT_SEED,
                       help=f"noise seed; same seed, same result (default {defaults.DEFAULT_SEED})")
    group.add_argument("--healthy-out", type=Path, metavar="FILE.png", help="2-D: the pseudo-healthy image")
    group.add_argument("--residual-out", type=Path, metavar="FILE.png", help="2-D: the fused residual (0..255 = 0..1)")


def params_from_args(args, is_volume: bool):
    """PseudoHealthyParams, or None without --pseudo-healthy; raises UserError on misuse."""
    given = [name for name in IMAGE_OUTPUTS if getattr(args, name, None)]
    if not getattr(args, "pseudo_healthy", False):
        if given:
            raise UserError(f"--{given[0].replace('_', '-')} needs --pseudo-healthy")
        return None
    if is_volume and given:
        raise UserError(f"--{given[0].replace('_', '-')} is for 2-D images; a volume writes healthy.nrrd and residual.nrrd "
                        "into --out-dir")
    for name in given:
        folder = Path(getattr(args, name)).resolve().parent
        if not folder.is_dir():
            raise UserError(f"output folder does not exist: {folder}")
    normal = getattr(args, "normal_prompt", None)  # the prompt-map options may provide one
    return defaults.PseudoHealthyParams(
        dilation_mm=args.healthy_dilation, strength=args.healthy_strength, steps=args.healthy_steps,
        guidance=args.healthy_guidance, seed=args.healthy_seed,
        normal_prompt=normal if normal and normal.strip().lower() != "none" else None)


def image_params(args, mode: str):
    """The 2-D checks: PseudoHealthyParams or None."""
    params = params_from_args(args, is_volume=False)
    if params is not None and mode == "unsupervised":
        raise UserError("--pseudo-healthy refines a lesion selection: it needs prompt or seed mode, not unsupervised")
    return params


def refine_image(args, segmenter, image, result, params, prompt) -> None:
    """Replace ``result.mask`` by the refined mask and write --healthy-out / --residual-out."""
    from .engine.pseudo_healthy import inpainter_for
    from .engine.residuals import refine_batch

    candidate = result.mask
    normal_prompt, negative_prompt = defaults.prompts_for(prompt, params)
    if candidate.any():
        refined = refine_batch(inpainter_for(segmenter), [image], [candidate], [0], params, normal_prompt,
                               negative_prompt)[0]
        healthy, residual, mask = refined.healthy, refined.residual, refined.mask
    else:  # nothing to repaint
        healthy, residual, mask = image, np.zeros(candidate.shape, dtype=np.float32), candidate
    print(f"pseudo-healthy ('{normal_prompt}', seed {params.seed}): mask {int(candidate.sum())} -> {int(mask.sum())} pixels")
    result.mask = mask
    if args.healthy_out:
        write_png(args.healthy_out, soft_to_png(healthy))
    if args.residual_out:
        write_png(args.residual_out, soft_to_png(residual))

