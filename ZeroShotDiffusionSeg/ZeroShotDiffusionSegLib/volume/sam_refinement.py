"""``--boundary sam`` for volumes: LiteMedSAM redraws the selection slice by slice before consolidation.

On every segmented slice whose selection is not empty, each piece of the selection gives a box
(``engine.sam_prompts``); a seed lying on the slice is also SAM's positive point. With an ROI, the
ROI's in-plane rectangle is SAM's box on every segmented slice it spans (a box -> 3-D lesion path),
whatever the attention selected there. The refined slices replace the selection, then go through
the same consolidation (components, minimum volume, numbering). The score map is left as it was:
it stays the attention score.

In seed mode SAM may draw pieces apart from the seeded lesion (look-alike tissue in a box, or
anywhere in an ROI's rectangle); seed mode promises the connected part under the seed, so only the
refined mask's 3-D parts that hold a seed are kept (``keep_seeded_parts``).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
from scipy import ndimage

from ..errors import UserError
from ..progress import check_cancel

BOUNDARIES = ("none", "sam")
SLICES_PER_CALL = 8  # slices handed to the refiner at once (it encodes them in its own batches)


def check(request, mode: str) -> None:
    """Input errors of the boundary stage, found before any model loads."""
    boundary = getattr(request, "boundary", "none")
    if boundary not in BOUNDARIES:
        raise UserError(f"unknown boundary {boundary!r}; use {' or '.join(BOUNDARIES)}")
    if boundary == "sam":
        if mode == "unsupervised":
            raise UserError("--boundary sam needs a selection (a prompt or a seed), not --mode unsupervised")
        from ..engine.boundary import checkpoint_path

        checkpoint_path()  # the package is installed: a one-line error now rather than after the diffusion pass


def provenance_entry(request) -> dict:
    """{} for ``none`` (provenance as before); otherwise the method and the checkpoint's pinned hash."""
    if getattr(request, "boundary", "none") != "sam":
        return {}
    from ..engine.boundary import CHECKPOINT_SHA256, PACKAGE, PACKAGE_VERSION
    from ..engine.sam_prompts import BOX_MARGIN

    return {"boundary": {"method": "LiteMedSAM", "package": f"{PACKAGE}=={PACKAGE_VERSION}", "checkpoint_sha256": CHECKPOINT_SHA256,
                         "box_margin": BOX_MARGIN, "score_points": bool(getattr(request, "boundary_points", False))}}


def refine_volume(prepared, selected: np.ndarray, score: np.ndarray, request, cancel=None, on_progress=None, refiner=None) -> np.ndarray:
    """The selection with each segmented slice redrawn by LiteMedSAM (a new array); ``on_progress(done, total)``
    after every chunk of slices, ``cancel`` checked before each."""
    from ..engine.boundary import shared_refiner
    from ..engine.sam_prompts import refine_selections

    refiner = refiner if refiner is not None else shared_refiner()
    plan = prepared.plan
    has_roi = request.roi_physical is not None or request.roi_voxels is not None
    seeds: Dict[int, List[Tuple[int, int]]] = {}
    for voxel in prepared.seeds:
        index, pixel = plan.pixel_of_voxel(voxel)
        seeds.setdefault(index, []).append(pixel)
    work = [index for index in prepared.segmentable if has_roi or plan.extract(selected, index).any()]
    refined = np.zeros_like(selected)
    for start in range(0, len(work), SLICES_PER_CALL):
        check_cancel(cancel)
        chunk = work[start:start + SLICES_PER_CALL]
        images = [prepared.make_image(index) for index in chunk]
        box = (0, 0, images[0].shape[1] - 1, images[0].shape[0] - 1) if has_roi else None
        masks = refine_selections(refiner, images, [plan.extract(selected, index) for index in chunk],
                                  [plan.extract(score, index) for index in chunk], [seeds.get(index, []) for index in chunk],
                                  score_points=bool(getattr(request, "boundary_points", False)), box=box)
        for index, mask in zip(chunk, masks):
            plan.insert(refined, index, mask)
        if on_progress is not None:
            on_progress(start + len(chunk), len(work))
    return keep_seeded_parts(refined, selected, prepared.seeds) if prepared.seeds else refined


def keep_seeded_parts(refined: np.ndarray, selected: np.ndarray, seeds) -> np.ndarray:
    """The face-connected 3-D parts of ``refined`` (as consolidation numbers them) that hold a seed voxel.

    A seed whose voxel SAM left out keeps the refined part overlapping most of the seed's own
    selection (``selected``, grown from the seed before SAM), so a seed still gives at most one lesion."""
    parts, count = ndimage.label(refined)
    if count == 0:
        return refined
    seeded_selection, _ = ndimage.label(selected)
    kept = set()
    for voxel in seeds:
        at = tuple(int(v) for v in reversed(voxel))  # ITK (i, j, k) -> numpy (k, j, i)
        part = int(parts[at])
        if part == 0 and seeded_selection[at]:
            overlaps = np.bincount(parts[seeded_selection == seeded_selection[at]], minlength=count + 1)
            overlaps[0] = 0
            part = int(np.argmax(overlaps)) if overlaps.max() > 0 else 0
        if part:
            kept.add(part)
    return np.isin(parts, sorted(kept))
