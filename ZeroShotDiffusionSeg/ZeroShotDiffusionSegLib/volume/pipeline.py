"""``run_volume``: read, window, slice, segment in batches, consolidate in 3-D, write all-or-nothing.

The caller (CLI, Slicer worker, HTTP server) supplies a loaded segmenter, so this module never
loads a model. Same input and request -> byte-identical labels.nrrd, score.nrrd and lesions.csv;
provenance.json differs only in its "runtime" section (timings, free memory).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..errors import UserError
from ..engine.prompt_length import segmenter_prompt_note
from ..progress import ProgressCallback, ProgressTracker, check_cancel
from ..prompt_words import normal_prompt_for
from . import consolidation, geometry, intensity, io, outputs, sam_refinement
from . import healthy as pseudo_healthy
from .batching import BatchRunner, choose_batch_size
from .query_cache import cache_fields
from .request import VolumeRequest, VolumeResult
from .slicing import SlicePlan, choose_slice_axis

AXIS_NAMES = "ijk"
# The engine scales each slice up to the model's resolution; a slice narrower than this holds no lesion to find.
MIN_SLICE_SIDE = 8
NOTHING_TO_SEGMENT = "no slice inside the ROI holds anything but air or a constant value; nothing to segment"


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
    return mode  # the mode's spelling and every range were checked when the VolumeRequest was built


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


def _segment_prompt(runner, plan, make_image, segmentable, prompt, normal_prompt, shape,
                    states=None) -> Tuple[np.ndarray, np.ndarray, float]:
    """(volume-normalised score, segmented-voxel mask, raw volume maximum)."""
    raw_score = np.zeros(shape, dtype=np.float32)
    segmented = np.zeros(shape, dtype=bool)

    def keep(index, result):
        plan.insert(raw_score, index, result.score_map.astype(np.float32))
        plan.insert(segmented, index, True)

    runner.run(segmentable, make_image, keep, prompt=prompt.strip(), normal_prompt=normal_prompt, states=states)
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


def check_request(input_path, out_dir, request: VolumeRequest, image: Optional[sitk.Image] = None) -> None:
    """Every input error ``run_volume`` would raise, found without a model: call it before a slow model load.

    ``image``: the volume already read (the server reads an upload with its own checks); else it is read here.
    """
    mode = resolve_mode(request)
    sam_refinement.check(request, mode)
    pseudo_healthy.check_request(request, mode)
    if mode == "prompt":
        normal_prompt_for(request.prompt, request.normal_prompt)
    with outputs.StagedOutputFolder(out_dir):
        pass  # created and discarded: proves the output folder can be written
    image = io.read_volume(input_path, series_uid=request.series_uid) if image is None else image
    box = roi_box(image, request)
    plan = SlicePlan(choose_slice_axis(image.GetDirection(), request.axis), box)
    rows, columns = (box.upper[a] - box.lower[a] + 1 for a in plan.in_plane_axes)
    if min(rows, columns) < MIN_SLICE_SIDE:
        inside = "the ROI" if request.roi_voxels is not None or request.roi_physical is not None else "the volume"
        raise UserError(f"{inside} is {columns} x {rows} voxels in the slice plane (axis {AXIS_NAMES[plan.axis]}); "
                        f"at least {MIN_SLICE_SIDE} x {MIN_SLICE_SIDE} is needed to segment")
    if request.seeds:
        _seed_voxels(image, request, box)
    if request.batch_size is not None:
        choose_batch_size(None, request.batch_size)  # only validates: an explicit size never asks the device
    voxels = sitk.GetArrayViewFromImage(image)  # a view: checking costs no copy of the volume
    choice = intensity.choose_intensity(voxels, request.prompt, request.window)
    if not segmentable_slices(voxels, plan, choice):
        raise UserError(NOTHING_TO_SEGMENT)


def segmentable_slices(raw: np.ndarray, plan: SlicePlan, choice: intensity.IntensityChoice) -> List[int]:
    """The slice indices inside the ROI that hold a body (not air only, not constant)."""
    return [index for index in plan.slice_indices() if intensity.has_body(plan.extract(raw, index), choice)]


@dataclass
class _Prepared:
    """The volume read and everything decided before the engine runs."""

    image: sitk.Image
    raw: np.ndarray  # float32 (k, j, i)
    checksum: str
    box: geometry.IndexBox
    plan: SlicePlan
    seeds: List[geometry.Index3]
    choice: intensity.IntensityChoice
    candidates: List[int]  # slice indices inside the ROI
    segmentable: List[int]  # ... that hold a body

    def make_image(self, index: int) -> np.ndarray:
        return intensity.to_unit_range(self.plan.extract(self.raw, index), self.choice)

    @property
    def slices_outside_roi(self) -> int:
        return self.image.GetSize()[self.plan.axis] - len(self.candidates)

    def slice_report(self) -> str:
        return (
            f"slices along {AXIS_NAMES[self.plan.axis]}: {len(self.segmentable)} segmented, "
            f"{self.slices_outside_roi} outside the ROI, {len(self.candidates) - len(self.segmentable)} without body (skipped)"
        )


def _prepare(input_path, request: VolumeRequest, mode: str, watch: _Stopwatch, cancel) -> _Prepared:
    with watch.stage("read"):
        image = io.read_volume(input_path, series_uid=request.series_uid)
        raw = io.volume_array(image)
        checksum = io.input_sha256(input_path)
    check_cancel(cancel)
    with watch.stage("prepare"):
        box = roi_box(image, request)
        plan = SlicePlan(choose_slice_axis(image.GetDirection(), request.axis), box)
        seeds = _seed_voxels(image, request, box) if mode == "seed" else []
        choice = intensity.choose_intensity(raw, request.prompt, request.window)
        candidates = plan.slice_indices()
        segmentable = segmentable_slices(raw, plan, choice)
    return _Prepared(image, raw, checksum, box, plan, seeds, choice, candidates, segmentable)


def _segment(mode: str, runner: BatchRunner, prepared: _Prepared, request: VolumeRequest, segmenter, cache):
    """(selected voxels, score volume, per-slice partition or None, raw prompt-score maximum or None)."""
    plan, shape, segmentable = prepared.plan, prepared.raw.shape, prepared.segmentable
    if mode == "prompt":
        normal_prompt = normal_prompt_for(request.prompt, request.normal_prompt)
        states = cached_states(cache, prepared, segmenter, request.params)
        score, segmented, volume_max = _segment_prompt(runner, plan, prepared.make_image, segmentable, request.prompt,
                                                       normal_prompt, shape, states)
        store_states(cache, prepared, segmenter, request.params, states)
        return consolidation.prompt_selection(score, request.params.selection_threshold, segmented), score, None, volume_max
    if mode == "unsupervised":
        partition = _segment_partition(runner, plan, prepared.make_image, segmentable, shape)
        return np.zeros(shape, dtype=bool), np.zeros(shape, dtype=np.float32), partition, None
    selected = _segment_seeds(runner, plan, prepared.make_image, segmentable, prepared.seeds, shape, runner.batch_size)
    return selected, selected.astype(np.float32), None, None


def cached_states(cache, prepared: _Prepared, segmenter, params):
    """The volume's cached states (a hit), an empty dict to fill (a miss), or None without a cache."""
    if cache is None or not hasattr(segmenter, "capture_states"):
        return None
    fields = cache_fields(prepared.checksum, segmenter, params, prepared.plan.axis, prepared.box, prepared.choice,
                          prepared.segmentable)
    found = cache.get(fields, segmenter.device)
    return found if found is not None else {}


def store_states(cache, prepared: _Prepared, segmenter, params, states) -> None:
    if cache is not None and states is not None and cache.last_event == "miss":
        cache.put(cache_fields(prepared.checksum, segmenter, params, prepared.plan.axis, prepared.box, prepared.choice,
                               prepared.segmentable), states)


def _scoring_message(request: VolumeRequest) -> str:
    normal_prompt = normal_prompt_for(request.prompt, request.normal_prompt)
    if normal_prompt is None:
        return f"prompt '{request.prompt.strip()}': plain prompt score (no normal prompt)"
    return (f"prompt '{request.prompt.strip()}' against normal prompt '{normal_prompt}' "
            f"(anomaly-aware, temperature {request.params.anomaly_temperature:g})")


def _provenance(input_path, prepared: _Prepared, segmenter, request, mode, runner, batch_reason, summary, messages, timings,
                cache_event="off"):
    image, segmented = prepared.image, len(prepared.segmentable)
    return {
        "tool": {"name": "zsdseg", "version": __version__},
        "input": {
            # The file name only: a full path can carry a patient's name and, on the server, its private folder.
            "name": Path(input_path).name,
            "sha256": prepared.checksum,
            "size_ijk": list(image.GetSize()),
            "spacing_mm": list(image.GetSpacing()),
            "origin_lps": list(image.GetOrigin()),
            "direction": list(image.GetDirection()),
            "pixel_type": image.GetPixelIDTypeAsString(),
        },
        "segmenter": segmenter.provenance(),
        "mode": mode,
        "request": request.to_dict(),
        "intensity": prepared.choice.to_dict(),
        "slicing": {
            "axis": AXIS_NAMES[prepared.plan.axis],
            "roi_ijk": {"lower": list(prepared.box.lower), "upper": list(prepared.box.upper)},
            "slices_segmented": segmented,
            "slices_outside_roi": prepared.slices_outside_roi,
            "slices_without_body": len(prepared.candidates) - segmented,
        },
        "seeds_ijk": [list(voxel) for voxel in prepared.seeds],
        "consolidation": {"rule": consolidation.RULES.get(mode), "connectivity": "face (6-connected)", **summary},
        **sam_refinement.provenance_entry(request),
        "outputs": dict(outputs.OUTPUT_NAMES),
        "versions": outputs.package_versions(),
        "messages": messages,
        "runtime": {  # the only part allowed to differ between two runs of the same request
            "batch_size_initial": runner.initial_batch_size,
            "batch_size_final": runner.batch_size,
            "batch_size_reason": batch_reason,
            "out_of_memory_retries": runner.out_of_memory_retries,
            "engine_passes": runner.passes,
            "slices_through_engine": runner.slices,
            "query_cache": cache_event,
            "timings_s": timings,
            "engine_timings_s": runner.engine_timings,
        },
    }


def run_volume(
    input_path,
    out_dir,
    segmenter,
    request: VolumeRequest,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
    cache=None,
) -> VolumeResult:
    """Segment a 3-D volume slice by slice and write labels.nrrd, score.nrrd, lesions.csv, provenance.json.

    ``cache`` (a ``QueryCache``): in prompt mode the unconditional pass's states are taken from it when
    it holds this volume (no model pass), else stored in it; the outputs are the same either way."""
    mode = resolve_mode(request)
    sam_refinement.check(request, mode)
    pseudo_healthy.check_request(request, mode)
    watch = _Stopwatch()
    check_cancel(cancel)
    with outputs.StagedOutputFolder(out_dir) as staged:
        prepared = _prepare(input_path, request, mode, watch, cancel)
        image, count = prepared.image, len(prepared.segmentable)
        messages = [prepared.choice.describe(), prepared.slice_report()]
        if mode == "prompt":
            messages.append(_scoring_message(request))
        if mode != "unsupervised":
            messages += [note for note in [segmenter_prompt_note(segmenter, request.prompt)] if note]
        if not count:
            raise UserError(NOTHING_TO_SEGMENT)

        reserved = pseudo_healthy.progress_units(request, count)  # the bar's share of --pseudo-healthy; 0 without
        tracker = ProgressTracker(progress, count + 2 + reserved, "segment")
        tracker.update(1, "volume read", stage="read")

        done = [0]

        def on_batch(slices):
            done[0] += slices
            tracker.update(1 + done[0], f"{done[0]}/{count} slices")

        batch_size, batch_reason = choose_batch_size(segmenter, request.batch_size)
        runner = BatchRunner(segmenter, batch_size, request.params, cancel, on_batch)
        with watch.stage("segment"):
            selected, score, partition, volume_max = _segment(mode, runner, prepared, request, segmenter, cache)
        if request.boundary == "sam":
            with watch.stage("boundary"):
                selected = sam_refinement.refine_volume(prepared, selected, score, request, cancel, lambda done, total: tracker.update(
                    count, f"boundary: {done}/{total} slices", stage="boundary"))
        check_cancel(cancel)
        healthy_summary = None
        if request.pseudo_healthy is not None:
            with watch.stage("pseudo_healthy"):
                selected, healthy_summary = pseudo_healthy.refine_volume(
                    prepared, selected, request, segmenter, runner.batch_size, staged, messages, progress, cancel,
                    span=((count + 1) / (count + 2 + reserved), (count + 1 + reserved) / (count + 2 + reserved)))
        with watch.stage("consolidate"):
            labels, dropped = consolidation.number_lesions(selected, float(np.prod(image.GetSpacing())), request.min_volume_mm3)
            lesions = consolidation.lesion_table(labels, score, image, choose_slice_axis(image.GetDirection(), "axial"))
        if mode == "unsupervised":
            messages.append("unsupervised: labels.nrrd holds each slice's regions (ids per slice); no lesions")
        else:
            small = f"; {dropped} smaller than {request.min_volume_mm3:g} mm3 dropped" if dropped else ""
            messages.append(f"{len(lesions)} lesion(s){small}")
        tracker.update(count + 1 + reserved, messages[-1], stage="consolidate")
        check_cancel(cancel)
        with watch.stage("write"):
            label_array = partition if partition is not None else labels
            if request.binary:
                label_array = (label_array > 0).astype(np.uint8)
            io.write_image(io.image_like(label_array, image), staged.path("labels"))
            io.write_image(io.image_like(score, image), staged.path("score"))
            outputs.write_lesions_csv(lesions, staged.path("lesions"))
        # Per slice that went through the engine; on a cache hit none did, and the stage scored every slice.
        timings = dict(watch.seconds, segment_per_slice=watch.seconds["segment"] / (runner.slices or count))
        summary = {"prompt_raw_score_max": volume_max,
                   "normal_prompt": normal_prompt_for(request.prompt, request.normal_prompt) if mode == "prompt" else None,
                   "components_dropped_below_min_volume": dropped, "lesions": len(lesions)}
        provenance = _provenance(input_path, prepared, segmenter, request, mode, runner, batch_reason, summary, messages, timings,
                                 cache.last_event if cache is not None else "off")
        if healthy_summary is not None:
            provenance["pseudo_healthy"] = healthy_summary
        outputs.write_json(provenance, staged.path("provenance"))
        check_cancel(cancel)  # last chance: after this the outputs appear
        files = staged.commit()
    tracker.update(count + 2 + reserved, "outputs written", stage="done")
    return VolumeResult(staged.out_dir, files, lesions, timings, messages)
