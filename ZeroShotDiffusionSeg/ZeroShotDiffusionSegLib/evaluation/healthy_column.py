"""The ``pseudo_healthy`` column of ``zsdseg eval``: the deployed mask refined from its pseudo-healthy
counterfactual (engine.residuals), with the default parameters, beside deployed, oracle and baselines.

2-D cases: the deployed mask is repainted here. Volume cases: the deployed request is run again with
``pseudo_healthy`` (``volume_params``) through the volume pipeline, whose labels are the refined rule."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ..engine.healthy_params import PseudoHealthyParams, prompts_for

MODE = "pseudo_healthy"


def add_arguments(parser) -> None:
    parser.add_argument("--pseudo-healthy", action="store_true",
                        help="add the column 'pseudo_healthy': the deployed mask refined from a pseudo-healthy "
                             "counterfactual (~20 extra UNet passes per image or per volume slice with a candidate; "
                             "a volume case in seed mode also runs its segmentation pass again)")


def modes(args, segmenter) -> list:
    return [MODE] if segmenter is not None and getattr(args, "pseudo_healthy", False) else []


def volume_params(args, segmenter) -> Optional[PseudoHealthyParams]:
    """The pseudo-healthy parameters of a volume case's column run; None when the column is not asked for."""
    return PseudoHealthyParams() if modes(args, segmenter) else None


def predictions(args, segmenter, image, deployed, is_volume: bool) -> Dict[str, np.ndarray]:
    """{MODE: refined mask} for a 2-D case when the column is asked for; {} otherwise (volumes: volume_params)."""
    if not modes(args, segmenter) or is_volume:
        return {}
    if not deployed.any():
        return {MODE: np.zeros_like(deployed)}
    from ..engine.pseudo_healthy import inpainter_for
    from ..engine.residuals import refine_batch

    params = PseudoHealthyParams()
    normal_prompt, negative_prompt = prompts_for(args.prompt, params)
    result = refine_batch(inpainter_for(segmenter), [image], [deployed], [0], params, normal_prompt, negative_prompt)[0]
    return {MODE: result.mask}
