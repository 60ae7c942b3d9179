"""The pseudo-healthy step of a volume run: refine the selection slice by slice from a counterfactual.

Only slices with a candidate (selected voxels) are repainted, in batches; the lesion numbering and
measurements then come from the refined selection through the usual consolidation. Outputs:
healthy.nrrd (the input with every repainted region replaced by its pseudo-healthy version,
brought back from the display window to the input's intensity units and pixel type; the input
elsewhere, so values outside the window survive where nothing was repainted) and residual.nrrd
(float32 fused residual, 0..1, 0 where nothing was repainted), on the input's exact grid.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..errors import UserError
from ..progress import ProgressCallback, ProgressTracker, check_cancel
from . import io

STAGE = "pseudo-healthy"


def check_request(request, mode: str) -> None:
    """Errors found before the model loads."""
    if request.pseudo_healthy is not None and mode == "unsupervised":
        raise UserError("--pseudo-healthy refines a lesion selection: it needs prompt or seed mode, not unsupervised")


def progress_units(request, segmented_slices: int) -> int:
    """Units of the run's progress bar kept for this stage: as many as the segmentation's (one per slice), a guess
    made before it is known how many slices hold a candidate; 0 without --pseudo-healthy."""
    return segmented_slices if request.pseudo_healthy is not None else 0


@dataclass
class HealthyVolume:
    selected: np.ndarray  # bool (k, j, i): the refined selection
    healthy: np.ndarray  # (k, j, i) in the input's intensity units and pixel type
    residual: np.ndarray  # float32 (k, j, i) in [0, 1]
    summary: dict  # for provenance


def _in_input_units(values: np.ndarray, choice, dtype: np.dtype) -> np.ndarray:
    raw = np.float32(choice.lower) + values.astype(np.float32) * np.float32(choice.upper - choice.lower)
    if np.issubdtype(dtype, np.integer):
        limits = np.iinfo(dtype)
        raw = np.clip(np.round(raw), limits.min, limits.max)
    return raw.astype(dtype)


def _scaled(progress: Optional[ProgressCallback], span: tuple) -> Optional[ProgressCallback]:
    """Events of this stage mapped into ``span`` of the whole run's fraction (the ETA stays the stage's)."""
    if progress is None:
        return None
    return lambda event: progress(replace(event, fraction=span[0] + (span[1] - span[0]) * event.fraction))


def refine_volume(prepared, selected: np.ndarray, request, segmenter, batch_size: int, staged, messages: list,
                  progress: Optional[ProgressCallback] = None, cancel: Optional[threading.Event] = None,
                  span: tuple = (0.0, 1.0)) -> tuple:
    """Repaint every slice's grown selection and refine it; stage healthy.nrrd and residual.nrrd.
    Returns (refined selection, provenance section)."""
    result = counterfactual_volume(prepared, selected, request, segmenter, batch_size, progress, cancel, span)
    io.write_image(io.image_like(result.healthy, prepared.image), staged.path("healthy"))
    io.write_image(io.image_like(result.residual, prepared.image), staged.path("residual"))
    messages.append(f"pseudo-healthy: {result.summary['slices_repainted']} slice(s) repainted toward "
                    f"'{result.summary['normal_prompt']}'; selection {result.summary['voxels_selected_before']} -> "
                    f"{result.summary['voxels_selected_after']} voxels")
    return result.selected, result.summary


def counterfactual_volume(prepared, selected: np.ndarray, request, segmenter, batch_size: int,
                          progress: Optional[ProgressCallback] = None, cancel: Optional[threading.Event] = None,
                          span: tuple = (0.0, 1.0)) -> HealthyVolume:
    """Repaint every slice's grown selection, refine it, and assemble the two output volumes."""
    from ..engine.healthy_params import prompts_for
    from ..engine.pseudo_healthy import inpainter_for
    from ..engine.residuals import RULE, refine_batch

    params = request.pseudo_healthy
    plan, choice, image = prepared.plan, prepared.choice, prepared.image
    normal_prompt, negative_prompt = prompts_for(request.prompt, params, request.normal_prompt)
    slices = [index for index in prepared.segmentable if plan.extract(selected, index).any()]
    row_axis, column_axis = plan.in_plane_axes
    spacing = (image.GetSpacing()[row_axis], image.GetSpacing()[column_axis])
    input_dtype = sitk.GetArrayViewFromImage(image).dtype
    healthy = np.asarray(sitk.GetArrayFromImage(image))  # a copy in the input's own pixel type
    residual = np.zeros(prepared.raw.shape, dtype=np.float32)
    refined = np.zeros(prepared.raw.shape, dtype=bool)
    steps = params.denoising_steps
    tracker = ProgressTracker(_scaled(progress, span), len(slices) * steps, STAGE)
    inpainter = inpainter_for(segmenter) if slices else None
    if slices:  # the stage's start: the ETA is measured from here, so the first step's event already has one
        tracker.update(0, f"0/{len(slices)} slices")
    for start in range(0, len(slices), batch_size):
        check_cancel(cancel)
        batch = slices[start:start + batch_size]
        done = start * steps

        def on_step(step, _latents, done=done, count=len(batch)):
            tracker.update(done + (step + 1) * count, f"{start + count}/{len(slices)} slices, step {step + 1}/{steps}")

        results = refine_batch(inpainter, [prepared.make_image(index) for index in batch],
                               [plan.extract(selected, index) for index in batch], batch, params, normal_prompt,
                               negative_prompt, spacing, cancel=cancel, on_step=on_step)
        for index, result in zip(batch, results):
            plan.insert(refined, index, result.mask)
            plan.insert(residual, index, result.residual)
            plane = plan.extract(healthy, index)
            plane[result.region] = _in_input_units(result.healthy[result.region], choice, input_dtype)
            plan.insert(healthy, index, plane)
    summary = {
        "parameters": params.to_dict(), "noise_seed": params.seed,
        "noise_rule": "per slice: numpy SeedSequence([seed, slice index]) seeds a torch CPU generator",
        "normal_prompt": normal_prompt, "negative_prompt": negative_prompt,
        "scheduler": "DDIMScheduler (eta 0) from the backbone's scheduler config",
        "denoising_steps_per_slice": steps, "slices_repainted": len(slices),
        "voxels_selected_before": int(selected.sum()), "voxels_selected_after": int(refined.sum()),
        "rule": RULE,
    }
    return HealthyVolume(refined, healthy, residual, summary)

