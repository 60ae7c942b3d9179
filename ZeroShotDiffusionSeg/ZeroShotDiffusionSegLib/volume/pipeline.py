"""``run_volume``: read, window, slice, segment in batches, consolidate in 3-D, write all-or-nothing.

The caller (CLI, Slicer worker, HTTP server) supplies a loaded segmenter, so this module never
loads a model. Same input and request -> byte-identical labels.nrrd, score.nrrd and lesions.csv;
provenance.json differs only in its "runtime" section (timings, free memory).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..errors import UserError
from ..progress import ProgressCallback, ProgressTracker, check_cancel
from . import consolidation, geometry, intensity, io, outputs
from .batching import BatchRunner, choose_batch_size
from .request import VolumeRequest, VolumeResult
from .slicing import SlicePlan, choose_slice_axis

AXIS_NAMES = "ijk"


def resolve_mode(request: VolumeRequest) -> str:
    """'prompt', 'seed' or 'unsupervised' (every slice's regions, not linked across slices: no lesions)."""
    mode = (request.mode or "auto").lower()
    if mode == "auto":
        mode = "seed" if request.seeds else "prompt" if request.prompt else ""
    if not mode:
        raise UserError(
            'a volume needs --prompt TEXT (e.g. --prompt "lung tumor"), a seed (--seed-ras X,Y,Z) or --mode unsupervised'
        )
    if mode == "prompt" and not (request.prompt and request.prompt.strip()):
        raise UserError('prompt mode needs a non-empty --prompt, e.g. --prompt "liver tumor"')
    if mode == "seed" and not request.seeds:
        raise UserError("seed mode needs at least one --seed-ras or --seed-lps X,Y,Z")
    if mode not in ("prompt", "seed", "unsupervised"):
        raise UserError(f"unknown mode {request.mode!r}; use prompt, seed or unsupervised")
    if request.min_volume_mm3 < 0:
        raise UserError(f"--min-volume must be >= 0 mm3, got {request.min_volume_mm3}")
    return mode


class _Stopwatch:
    def __init__(self):
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def roi_box(image: sitk.Image, request: VolumeRequest) -> geometry.IndexBox:
    if request.roi_voxels is not None and request.roi_physical is not None:
        raise UserError("give either a voxel ROI or a physical ROI, not both")
    if request.roi_voxels is not None:
        return geometry.voxel_roi_box(image, *request.roi_voxels)
    if request.roi_physical is not None:
        return geometry.physical_roi_box(image, *request.roi_physical, request.coordinate_space)
    return geometry.whole_volume_box(image)


def _seed_voxels(image, request: VolumeRequest, box: geometry.IndexBox) -> List[geometry.Index3]:
    voxels = []
    for point in request.seeds:
        voxel = geometry.seed_voxel(image, point, request.coordinate_space)
        if not box.contains(voxel):
            raise UserError(f"seed {tuple(point)} {request.coordinate_space} (voxel {voxel}) is outside the ROI")
        voxels.append(voxel)
    return voxels


def _consecutive_run(indices: List[int], member: int) -> List[int]:
    """The run of consecutive slice indices in ``indices`` that contains ``member``."""
    position = indices.index(member)
    start, end = position, position
    while start > 0 and indices[start - 1] == indices[start] - 1:
        start -= 1
    while end + 1 < len(indices) and indices[end + 1] == indices[end] + 1:
        end += 1
    return indices[start : end + 1]


def _segment_prompt(runner, plan, make_image, segmentable, prompt, shape) -> Tuple[np.ndarray, np.ndarray, float]:
    """(volume-normalised score, segmented-voxel mask, raw volume maximum)."""
    raw_score = np.zeros(shape, dtype=np.float32)
    segmented = np.zeros(shape, dtype=bool)

    def keep(index, result):
        plan.insert(raw_score, index, result.score_map.astype(np.float32))
        plan.insert(segmented, index, True)

    runner.run(segmentable, make_image, keep, prompt=prompt.strip())
    volume_max = float(raw_score.max())
    if volume_max > 0:
        raw_score /= np.float32(volume_max)
    return raw_score, segmented, volume_max


def _segment_partition(runner, plan, make_image, segmentable, shape) -> np.ndarray:
    """Every slice's regions as 1..K (0 = not segmented); ids are per slice, not linked in 3-D."""
    partition = np.zeros(shape, dtype=np.uint16)

    def keep(index, result):
        if result.labels.max() >= np.iinfo(np.uint16).max:
            raise UserError(f"slice {index} has {int(result.labels.max()) + 1} regions, more than a uint16 label map holds")
        plan.insert(partition, index, result.labels.astype(np.uint16) + 1)

    runner.run(segmentable, make_image, keep)
    return partition


def _segment_seeds(runner, plan, make_image, segmentable, seeds, shape, batch_size) -> np.ndarray:
    partitions: Dict[int, np.ndarray] = {}

    def fetch_labels(indices):
        missing = [index for index in indices if index not in partitions]
        runner.run(missing, make_image, lambda index, result: partitions.__setitem__(index, result.labels.astype(np.int32)))
        return {index: partitions[index] for index in indices}

    selected = np.zeros(shape, dtype=bool)
    for voxel in seeds:
        slice_index, pixel = plan.pixel_of_voxel(voxel)
        if slice_index not in segmentable:
            raise UserError(f"seed voxel {voxel} lies on slice {slice_index}, which has no body (air or constant)")
        run = _consecutive_run(segmentable, slice_index)
        masks = consolidation.propagate_from_seed(slice_index, pixel, run, fetch_labels, chunk=batch_size)
        for index, mask in masks.items():
            plan.insert(selected, index, plan.extract(selected, index) | mask)
    return selected


def check_request(input_path, out_dir, request: VolumeRequest) -> None:
    """Every input error ``run_volume`` would raise, found without a model: call it before a slow model load."""
    resolve_mode(request)
    with outputs.StagedOutputFolder(out_dir):
        pass  # created and discarded: proves the output folder can be written
    image = io.read_volume(input_path)
    box = roi_box(image, request)
    choose_slice_axis(image.GetDirection(), request.axis)
    if request.seeds:
        _seed_voxels(image, request, box)
    if request.window:
        intensity.parse_window(request.window)
    if request.batch_size is not None:
        choose_batch_size(None, request.batch_size)  # only validates: an explicit size never asks the device


def run_volume(
    input_path,
    out_dir,
    segmenter,
    request: VolumeRequest,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
) -> VolumeResult:
    """Segment a 3-D volume slice by slice and write labels.nrrd, score.nrrd, lesions.csv, provenance.json."""
    mode = resolve_mode(request)
    watch = _Stopwatch()
    messages: List[str] = []
    check_cancel(cancel)
    with outputs.StagedOutputFolder(out_dir) as staged:
        with watch.stage("read"):
            image = io.read_volume(input_path)
            raw = io.volume_array(image)
            checksum = io.input_sha256(input_path)
        check_cancel(cancel)
        with watch.stage("prepare"):
            box = roi_box(image, request)
            plan = SlicePlan(choose_slice_axis(image.GetDirection(), request.axis), box)
            seeds = _seed_voxels(image, request, box) if mode == "seed" else []
            choice = intensity.choose_intensity(raw, request.prompt, request.window)
            candidates = plan.slice_indices()
            segmentable = [index for index in candidates if intensity.has_body(plan.extract(raw, index), choice)]
            batch_size, batch_reason = choose_batch_size(segmenter, request.batch_size)
        outside_roi = image.GetSize()[plan.axis] - len(candidates)
        messages.append(choice.describe())
        messages.append(
            f"slices along {AXIS_NAMES[plan.axis]}: {len(segmentable)} segmented, "
            f"{outside_roi} outside the ROI, {len(candidates) - len(segmentable)} without body (skipped)"
        )
        if not segmentable:
            raise UserError("no slice inside the ROI holds anything but air or a constant value; nothing to segment")

        tracker = ProgressTracker(progress, len(segmentable) + 2, "segment")
        tracker.update(1, "volume read", stage="read")
        done = [0]

        def on_batch(count):
            done[0] += count
            tracker.update(1 + done[0], f"{done[0]}/{len(segmentable)} slices")

        runner = BatchRunner(segmenter, batch_size, request.params, cancel, on_batch)

        def make_image(index):
            return intensity.to_unit_range(plan.extract(raw, index), choice)

        volume_max = None
        with watch.stage("segment"):
            if mode == "prompt":
                score, segmented, volume_max = _segment_prompt(runner, plan, make_image, segmentable, request.prompt, raw.shape)
                selected = consolidation.prompt_selection(score, request.params.selection_threshold, segmented)
            elif mode == "unsupervised":
                partition = _segment_partition(runner, plan, make_image, segmentable, raw.shape)
                selected = np.zeros(raw.shape, dtype=bool)
                score = np.zeros(raw.shape, dtype=np.float32)
            else:
                selected = _segment_seeds(runner, plan, make_image, segmentable, seeds, raw.shape, batch_size)
                score = selected.astype(np.float32)
        check_cancel(cancel)
        with watch.stage("consolidate"):
            voxel_mm3 = float(np.prod(image.GetSpacing()))
            labels, dropped = consolidation.number_lesions(selected, voxel_mm3, request.min_volume_mm3)
            axial_axis = choose_slice_axis(image.GetDirection(), "axial")
            lesions = consolidation.lesion_table(labels, score, image, axial_axis)
        messages.append(
            "unsupervised: labels.nrrd holds each slice's regions (ids per slice); no lesions"
            if mode == "unsupervised"
            else f"{len(lesions)} lesion(s)" + (f"; {dropped} smaller than {request.min_volume_mm3:g} mm3 dropped" if dropped else "")
        )
        tracker.update(len(segmentable) + 1, messages[-1], stage="consolidate")
        check_cancel(cancel)
        with watch.stage("write"):
            label_array = partition if mode == "unsupervised" else labels
            if request.binary:
                label_array = (label_array > 0).astype(np.uint8)
            io.write_image(io.image_like(label_array, image), staged.path("labels"))
            io.write_image(io.image_like(score.astype(np.float32), image), staged.path("score"))
            outputs.write_lesions_csv(lesions, staged.path("lesions"))
        segments = len(segmentable)
        timings = dict(watch.seconds)
        timings["segment_per_slice"] = timings["segment"] / max(runner.slices, 1)
        provenance = {
            "tool": {"name": "zsdseg", "version": __version__},
            "input": {
                "path": str(input_path),
                "sha256": checksum,
                "size_ijk": list(image.GetSize()),
                "spacing_mm": list(image.GetSpacing()),
                "origin_lps": list(image.GetOrigin()),
                "direction": list(image.GetDirection()),
                "pixel_type": image.GetPixelIDTypeAsString(),
            },
            "segmenter": segmenter.provenance(),
            "mode": mode,
            "request": request.to_dict(),
            "intensity": choice.to_dict(),
            "slicing": {
                "axis": AXIS_NAMES[plan.axis],
                "roi_ijk": {"lower": list(box.lower), "upper": list(box.upper)},
                "slices_segmented": segments,
                "slices_outside_roi": outside_roi,
                "slices_without_body": len(candidates) - segments,
            },
            "seeds_ijk": [list(voxel) for voxel in seeds],
            "consolidation": {
                "rule": consolidation.RULES.get(mode),
                "prompt_raw_score_max": volume_max,
                "connectivity": "face (6-connected)",
                "components_dropped_below_min_volume": dropped,
                "lesions": len(lesions),
            },
            "outputs": dict(outputs.OUTPUT_NAMES),
            "versions": outputs.package_versions(),
            "messages": messages,
            "runtime": {
                "batch_size_initial": batch_size,
                "batch_size_final": runner.batch_size,
                "batch_size_reason": batch_reason,
                "out_of_memory_retries": runner.out_of_memory_retries,
                "engine_passes": runner.passes,
                "slices_through_engine": runner.slices,
                "timings_s": timings,
                "engine_timings_s": runner.engine_timings,
            },
        }
        outputs.write_json(provenance, staged.path("provenance"))
        check_cancel(cancel)  # last chance: after this the outputs appear
        files = staged.commit()
    tracker.update(len(segmentable) + 2, "outputs written", stage="done")
    return VolumeResult(Path(out_dir), files, lesions, timings, messages)
