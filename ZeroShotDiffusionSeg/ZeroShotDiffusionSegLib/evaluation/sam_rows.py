"""``zsdseg eval --sam``: LiteMedSAM rows, on the same cases as the other modes.

* ``sam_box_jJ``: the truth's boxes (one per 8-connected piece, tight) with each coordinate moved by
  a uniform draw in ±J % of the box's width (x) or height (y), seeded per case and J; the union of
  the boxes' masks. This measures the stage alone, given a good box.
* ``sam_box_point``: the tight truth boxes plus a positive point at each piece's interior-most pixel.
* ``otsu_largest`` / ``otsu_centre`` / ``kmeans_largest`` / ``kmeans_centre`` and their ``…_sam``:
  weight-free proposals without any truth. The image's intensity classes (Otsu: 2, k-means: k) are
  cut into 8-connected pieces; *largest* is the largest piece that does not touch the image border
  (the largest piece at all when every piece touches it), *centre* is the piece under the image's
  centre pixel. ``…_sam`` is LiteMedSAM from that piece's box padded by ``BOX_MARGIN``.
* ``deployed_sam`` (2-D, with ``--model``): the deployed selection redrawn exactly as ``--boundary sam``
  does (``engine.sam_prompts.refine_selections``), to compare with ``deployed``.

Volumes: the rows with truth boxes run on every slice (first array axis) holding truth, the slice
windowed as the volume pipeline would (CT preset or percentiles); other slices stay empty. The
proposal rows are 2-D only: a proposal on every slice of a volume is not a rule anyone would use.
Every image is embedded once for all its boxes.
"""

from __future__ import annotations

import argparse
import zlib
from typing import Dict, List, Optional

import numpy as np

from ..engine.sam_prompts import BOX_MARGIN, interior_point, pad_box, pieces, tight_box
from . import baselines

PROPOSAL_RULES = ("largest", "centre")
PROPOSAL_SOURCES = ("otsu", "kmeans")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sam", action="store_true", help="add the LiteMedSAM rows (truth boxes jittered, weight-free proposals + SAM)")
    parser.add_argument("--sam-jitter", default="0,10,20", help="truth-box jitters in %% of the box size (default: %(default)s)")
    parser.add_argument("--sam-seed", type=int, default=0, help="seed of the box jitter (default: %(default)s)")


def jitters(args) -> List[int]:
    return [int(value) for value in str(args.sam_jitter).split(",") if value.strip()]


def modes(args, is_volume: bool, with_model: bool = False) -> List[str]:
    if not args.sam:
        return []
    names = (["deployed_sam"] if with_model and not is_volume else []) + [f"sam_box_j{j}" for j in jitters(args)] + ["sam_box_point"]
    if not is_volume:
        for source in PROPOSAL_SOURCES:
            for rule in PROPOSAL_RULES:
                names += [f"{source}_{rule}", f"{source}_{rule}_sam"]
    return names


def jitter_box(box, fraction: float, rng: np.random.Generator, shape) -> tuple:
    x0, y0, x1, y1 = box
    width, height = x1 - x0 + 1, y1 - y0 + 1
    moved = np.array(box, dtype=float) + rng.uniform(-fraction, fraction, 4) * np.array([width, height, width, height])
    x0, x1 = sorted((moved[0], moved[2]))
    y0, y1 = sorted((moved[1], moved[3]))
    rows, cols = shape
    return (float(np.clip(x0, 0, cols - 1)), float(np.clip(y0, 0, rows - 1)), float(np.clip(x1, 0, cols - 1)), float(np.clip(y1, 0, rows - 1)))


def proposal(classes: np.ndarray, rule: str) -> np.ndarray:
    """The piece of any intensity class chosen by ``rule`` (see the module docstring)."""
    candidates = [piece for value in np.unique(classes) for piece in pieces(classes == value, min_pixels=1)]
    if rule == "centre":
        centre = (classes.shape[0] // 2, classes.shape[1] // 2)
        return next(piece for piece in candidates if piece[centre])
    inner = [p for p in candidates if not (p[0].any() or p[-1].any() or p[:, 0].any() or p[:, -1].any())]
    return max(inner or candidates, key=lambda p: int(p.sum()))


def _truth_prompts(truth: np.ndarray, args, case_name: str):
    """{mode: (boxes, points)} for the truth-box rows on one 2-D truth."""
    truth_pieces = pieces(truth, min_pixels=1)
    tight = [tight_box(piece) for piece in truth_pieces]
    prompts = {}
    for j in jitters(args):
        rng = np.random.default_rng([args.sam_seed, j, zlib.crc32(case_name.encode())])
        prompts[f"sam_box_j{j}"] = ([jitter_box(box, j / 100.0, rng, truth.shape) for box in tight], None)
    prompts["sam_box_point"] = (tight, [[(*interior_point(piece), True)] for piece in truth_pieces])
    return prompts


def _refine_union(refiner, image, prompts: Dict[str, tuple], shape) -> Dict[str, np.ndarray]:
    """Every mode's boxes on one embedding of ``image``; per mode the union of its boxes' masks."""
    boxes, points, owners = [], [], []
    for mode, (mode_boxes, mode_points) in prompts.items():
        for index, box in enumerate(mode_boxes):
            boxes.append(box)
            points.append(mode_points[index] if mode_points is not None else None)
            owners.append(mode)
    unions = {mode: np.zeros(shape, dtype=bool) for mode in prompts}
    if boxes:
        masks = refiner.refine_many([image], [boxes], [points])[0]
        for mode, mask in zip(owners, masks):
            unions[mode] |= mask
    return unions


def predictions_2d(refiner, image: np.ndarray, truth: np.ndarray, args, case_name: str) -> Dict[str, np.ndarray]:
    prompts = _truth_prompts(truth, args, case_name)
    grey = baselines.intensity(image)
    alone = {}
    for source in PROPOSAL_SOURCES:
        classes = grey > baselines.otsu_threshold(grey) if source == "otsu" else baselines.kmeans_classes(grey, args.kmeans_clusters)
        for rule in PROPOSAL_RULES:
            piece = proposal(classes, rule)
            alone[f"{source}_{rule}"] = piece
            prompts[f"{source}_{rule}_sam"] = ([pad_box(tight_box(piece), BOX_MARGIN, truth.shape)], None)
    return {**alone, **_refine_union(refiner, image, prompts, truth.shape)}


def predictions_3d(refiner, volume: np.ndarray, truth: np.ndarray, args, case_name: str) -> Dict[str, np.ndarray]:
    from ..volume.intensity import choose_intensity, to_unit_range

    choice = choose_intensity(volume)
    out = {f"sam_box_j{j}": np.zeros(truth.shape, dtype=bool) for j in jitters(args)}
    out["sam_box_point"] = np.zeros(truth.shape, dtype=bool)
    for index in np.flatnonzero(truth.reshape(truth.shape[0], -1).any(axis=1)):
        image = to_unit_range(volume[index], choice)
        slice_masks = _refine_union(refiner, image, _truth_prompts(truth[index], args, f"{case_name}#{index}"), truth.shape[1:])
        for mode, mask in slice_masks.items():
            out[mode][index] = mask
    return out


def predictions(refiner, image: np.ndarray, truth: np.ndarray, is_volume: bool, args, case_name: str,
                deployed: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """Every SAM row's mask for one case (an empty truth gives the truth rows no box: empty masks)."""
    if is_volume:
        return predictions_3d(refiner, image, truth, args, case_name)
    rows = predictions_2d(refiner, image, truth, args, case_name)
    if deployed is not None:
        from ..engine.sam_prompts import refine_selections

        rows["deployed_sam"] = refine_selections(refiner, [image], [deployed])[0]
    return rows


def load_refiner(args):
    from ..engine.boundary import shared_refiner

    return shared_refiner() if args.sam else None


def provenance(refiner) -> Optional[dict]:
    return refiner.provenance() if refiner is not None else None
