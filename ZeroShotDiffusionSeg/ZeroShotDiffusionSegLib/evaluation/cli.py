"""``zsdseg eval``: accuracy on a folder of images or volumes with ground truth.

Per case: the deployed selection (the prompt's mask, or the segment under a seed at the
truth's centroid), the oracle selections from the same partition (best single segment by
Hungarian matching, greedy union), and the weight-free baselines with the same seed. Without
``--model`` only the baselines run. A case that fails is recorded with its error and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Dict

import numpy as np

from ..engine.types import SegmentationParams
from ..errors import UserError
from ..prompt_words import normal_prompt_for
from . import baselines, healthy_column, layouts, overlays, report, sam_rows
from .metrics import case_metrics
from .oracle import greedy_union, hungarian_segment, per_slice_unique
from .seeding import seed_at_centroid

MODEL_MODES = ("deployed", "oracle_single", "oracle_union")
PLAIN_PROMPT_MODE = "deployed_plain"  # prompt selection: the plain prompt score beside the anomaly-aware one


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="data set folder")
    parser.add_argument("--layout", choices=layouts.LAYOUTS, default="pairs", help="how images and masks are arranged (default: pairs)")
    parser.add_argument("--mask-pattern", default=layouts.DEFAULT_MASK_PATTERN,
                        help="pairs layout: mask path relative to its image, with {name} and {ext} (default: %(default)s)")
    parser.add_argument("--wbc-target", choices=layouts.WBC_TARGETS, default="nucleus", help="wbc layout: nucleus or whole cell")
    parser.add_argument("--model", default=None, help="hub id, local folder or random:tiny|random:sd15; omit for baselines only")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="fp32, fp16, bf16 (default: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--prompt", default=None, help='text prompt for the deployed selection, e.g. "breast tumor"')
    parser.add_argument("--selection", choices=("prompt", "seed"), default=None,
                        help="deployed selection (default: prompt if --prompt is given, else a seed at the truth's centroid)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the Otsu and k-means baselines")
    parser.add_argument("--kmeans-clusters", type=int, default=baselines.KMEANS_CLUSTERS, help="k of the k-means baseline")
    parser.add_argument("--kl-threshold", type=float, default=SegmentationParams.kl_threshold, help="merging threshold (default: %(default)s)")
    parser.add_argument("--timestep", type=int, default=SegmentationParams.timestep, help="diffusion timestep (default: %(default)s)")
    parser.add_argument("--selection-threshold", type=float, default=SegmentationParams.selection_threshold,
                        help="prompt mode: keep segments scoring at least this (default: %(default)s)")
    parser.add_argument("--only", default=None, help="evaluate only these cases: comma-separated names, e.g. lung2,brain1")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N cases (natural order)")
    parser.add_argument("--out", required=True,
                        help="output folder for report.md, results.json, overlays/ (required: the overlays show the data set's images)")
    parser.add_argument("--no-overlays", action="store_true", help="do not write an overlay PNG per case")
    healthy_column.add_arguments(parser)
    sam_rows.add_arguments(parser)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._()+-]+", "_", name)


def _load_segmenter(args):
    from ..engine import DiffusionSegmenter, load_backbone

    return DiffusionSegmenter(load_backbone(args.model, device=args.device, dtype=args.dtype))


def _baseline_predictions(image, seed, is_volume, clusters) -> Dict[str, np.ndarray]:
    if seed is None:  # empty truth: no click to give, so the seeded baselines select nothing
        otsu = kmeans = np.zeros(image.shape if is_volume else image.shape[:2], dtype=bool)
    else:
        otsu = baselines.otsu_seed(image, seed, is_volume)
        kmeans = baselines.kmeans_seed(image, seed, is_volume, clusters)
    return {"otsu": otsu, "kmeans": kmeans, "whole_image": baselines.whole_image(image, seed, is_volume)}


def _prompt_results_2d(segmenter, image, prompt, params):
    """(anomaly-aware result, plain result) of the prompt, both from one pass."""
    if not hasattr(segmenter, "capture_states"):  # a stand-in engine without states knows one rule only
        result = segmenter.segment_batch([image], prompt=prompt, params=params)[0]
        return result, result
    states = segmenter.capture_states([image], params)
    timings = dict(segmenter.last_timings)
    aware = segmenter.score_states(states, prompt, normal_prompt_for(prompt), params)[0]
    plain = segmenter.score_states(states, prompt, None, params)[0]
    aware.timings = timings
    return aware, plain


def _model_predictions_2d(segmenter, image, truth, seed, selection, prompt, params):
    plain = None
    if selection == "prompt":
        result, plain = _prompt_results_2d(segmenter, image, prompt, params)
    else:
        seeds = [[(seed[1], seed[0])]] if seed is not None else None  # engine seeds are (x=col, y=row)
        result = segmenter.segment_batch([image], seeds=seeds, params=params)[0]
    deployed = result.mask if result.mask is not None else np.zeros(truth.shape, dtype=bool)
    predictions = {
        "deployed": np.asarray(deployed, dtype=bool),
        "oracle_single": hungarian_segment(result.labels, truth)[0],
        "oracle_union": greedy_union(result.labels, truth)[0],
    }
    if plain is not None:
        predictions[PLAIN_PROMPT_MODE] = np.asarray(plain.mask, dtype=bool)
    return predictions, {"timings": dict(result.timings), "segments": int(np.unique(result.labels).size)}


def _model_predictions_3d(segmenter, case, volume, truth, seed, selection, prompt, params, work_dir: Path, healthy=None):
    """Deployed: the volume pipeline with the prompt or a seed at the truth's centroid. Oracle: the
    pipeline's unsupervised run (every segmented slice's regions; the empty prompt conditions the
    pass, the prompt only picks the CT window), ids made distinct per slice, matched in 3-D.
    ``healthy`` (PseudoHealthyParams): the deployed request again with them, for the pseudo-healthy column;
    a prompt run takes its pass from the same query cache, so only the repaint is new work."""
    import dataclasses

    import SimpleITK as sitk

    from ..volume import VolumeRequest, run_volume
    from ..volume.geometry import voxel_to_physical
    from ..volume.query_cache import QueryCache

    def labels_of(result) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(result.files["labels"])))

    details: dict = {}
    predictions = {}
    cache = None
    if selection == "prompt":  # the plain rule from the same pass (the cache), beside the anomaly-aware one
        cache = QueryCache()
        plain = run_volume(case.image_path, work_dir / "deployed_plain", segmenter,
                           VolumeRequest(prompt=prompt, mode="prompt", normal_prompt="none", params=params), cache=cache)
        predictions[PLAIN_PROMPT_MODE] = labels_of(plain) != 0
    if selection == "prompt" or seed is not None:
        if selection == "prompt":
            request = VolumeRequest(prompt=prompt, mode="prompt", params=params)
        else:
            point = voxel_to_physical(volume, tuple(reversed(seed)))  # numpy (k, j, i) -> ITK (i, j, k)
            request = VolumeRequest(mode="seed", seeds=[point], coordinate_space="LPS", params=params)
        result = run_volume(case.image_path, work_dir / "deployed", segmenter, request, cache=cache)
        deployed = labels_of(result) != 0
        details.update(timings=dict(result.timings), messages=list(result.messages))
        if healthy is not None:
            refined = run_volume(case.image_path, work_dir / healthy_column.MODE, segmenter,
                                 dataclasses.replace(request, pseudo_healthy=healthy), cache=cache)
            predictions[healthy_column.MODE] = labels_of(refined) != 0
    else:  # empty truth and no prompt: no click to give, nothing selected
        deployed = np.zeros(truth.shape, dtype=bool)
        if healthy is not None:
            predictions[healthy_column.MODE] = deployed
    unsupervised = run_volume(case.image_path, work_dir / "partition", segmenter,
                              VolumeRequest(prompt=prompt, mode="unsupervised", params=params))
    provenance = json.loads(Path(unsupervised.files["provenance"]).read_text(encoding="utf-8"))
    slice_axis = 2 - "ijk".index(provenance["slicing"]["axis"])  # ITK axis a is numpy axis 2 - a
    partition = per_slice_unique(labels_of(unsupervised), axis=slice_axis)  # 0 = not segmented: one region per slice
    details["segments"] = int(np.unique(partition).size)
    return {
        "deployed": deployed,
        "oracle_single": hungarian_segment(partition, truth)[0],
        "oracle_union": greedy_union(partition, truth)[0],
        **predictions,
    }, details


def _read_volume(case):
    """The case's image read once: the SimpleITK image (for its geometry) and its voxels as float32."""
    import SimpleITK as sitk

    volume = sitk.ReadImage(str(case.image_path))
    return volume, sitk.GetArrayFromImage(volume).astype(np.float32)


def evaluate_case(case, segmenter, args, params, out_dir: Path, refiner=None) -> dict:
    """One case's record for results.json: metrics per mode, seed, seconds; raises on failure."""
    started = time.perf_counter()
    loaded = layouts.load_case(case)
    truth = loaded.truth
    seed = seed_at_centroid(truth)
    is_volume = case.kind == "volume"
    volume, image = _read_volume(case) if is_volume else (None, loaded.image)
    if is_volume and image.shape != truth.shape:
        raise UserError(f"{case.name}: image grid {image.shape} differs from label grid {truth.shape}")
    predictions: Dict[str, np.ndarray] = {}
    model_details: dict = {}
    if segmenter is not None:
        if is_volume:
            model_predictions, model_details = _model_predictions_3d(
                segmenter, case, volume, truth, seed, args.selection, args.prompt, params, out_dir / "volumes" / _file_name(case.name),
                healthy_column.volume_params(args, segmenter))
        else:
            model_predictions, model_details = _model_predictions_2d(segmenter, image, truth, seed, args.selection, args.prompt, params)
        predictions.update(model_predictions)
        predictions.update(healthy_column.predictions(args, segmenter, image, predictions["deployed"], is_volume))
    if not args.no_baselines:
        predictions.update(_baseline_predictions(image, seed, is_volume, args.kmeans_clusters))
    if refiner is not None:
        predictions.update(sam_rows.predictions(refiner, image, truth, is_volume, args, case.name, predictions.get("deployed")))
    metrics = {mode: case_metrics(prediction, truth, loaded.spacing) for mode, prediction in predictions.items()}
    if not args.no_overlays and predictions:
        _write_case_overlay(out_dir / "overlays" / f"{_file_name(case.name)}.png", case, image, truth, predictions, seed,
                            volume, metrics, report.is_meaningless(args.model))
    return {
        "name": case.name,
        "status": "ok",
        "image": str(case.image_path),
        "masks": [str(p) for p in case.mask_paths],
        "kind": case.kind,
        "seed_index": list(seed) if seed is not None else None,
        "spacing": list(loaded.spacing) if loaded.spacing else None,
        "metrics": metrics,
        "model": model_details,
        "seconds": time.perf_counter() - started,
    }


def _write_case_overlay(path: Path, case, image, truth, predictions, seed, volume, metrics, random_weights: bool) -> None:
    """2-D: the image as it is. 3-D: the slice through the seed (or the middle one) along the axis closest to
    axial, turned as Slicer shows it (``overlays.SliceView``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dice = {mode: values["dice"] for mode, values in metrics.items()}
    if volume is None:
        overlays.write_overlay(path, image, truth, predictions, seed, dice, case.name, random_weights)
        return
    view = overlays.SliceView.for_image(volume.GetDirection(), volume.GetSpacing())
    numpy_axis = 2 - view.slice_axis
    index = seed[numpy_axis] if seed is not None else truth.shape[numpy_axis] // 2
    raw_truth = view.raw_slice(truth, index)
    seed_rc = None
    if seed is not None:
        seed_rc = view.point_to_screen(*[seed[axis] for axis in range(3) if axis != numpy_axis], raw_truth.shape)
    heading = (f"{case.name}: {view.view} slice {'ijk'[view.slice_axis]} = {index} of {truth.shape[numpy_axis]}"
               f"{' through the seed' if seed is not None else ''}, as Slicer shows it (patient's right on the left)")
    overlays.write_overlay(path, overlays.window_for_display(view.to_screen(view.raw_slice(image, index))), view.to_screen(raw_truth),
                           {mode: view.to_screen(view.raw_slice(p, index)) for mode, p in predictions.items()}, seed_rc, dice,
                           heading, random_weights, view)


def run(args) -> int:
    from tqdm import tqdm

    if args.selection is None:
        args.selection = "prompt" if args.prompt else "seed"
    if args.selection == "prompt" and not args.prompt:
        raise UserError("--selection prompt needs --prompt TEXT")
    if args.model is None and args.no_baselines and not args.sam:
        raise UserError("nothing to evaluate: give --model, or drop --no-baselines")
    if args.model is None and args.prompt:
        raise UserError("--prompt needs --model: the weight-free baselines do not read a prompt")
    params = SegmentationParams(kl_threshold=args.kl_threshold, timestep=args.timestep, selection_threshold=args.selection_threshold)
    cases = layouts.discover(args.layout, args.root, args.mask_pattern, args.wbc_target)
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = sorted(set(wanted) - {case.name for case in cases})
        if unknown:
            raise UserError(f"--only: no case named {', '.join(unknown)} (names are the image stems, e.g. {cases[0].name})")
        cases = [case for case in cases if case.name in wanted]
    if args.limit is not None:
        cases = cases[: max(args.limit, 0)]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    segmenter = _load_segmenter(args) if args.model else None
    refiner = sam_rows.load_refiner(args)
    model_modes = list(MODEL_MODES) + ([PLAIN_PROMPT_MODE] if args.selection == "prompt" else [])
    modes = (model_modes if segmenter is not None else []) + healthy_column.modes(args, segmenter) + (
        [] if args.no_baselines else list(baselines.BASELINES))
    modes += sam_rows.modes(args, cases[0].kind == "volume", segmenter is not None)

    records = []
    # A bar redraws itself with carriage returns: on a terminal only. A log gets one line per case.
    terminal = sys.stderr.isatty()
    for number, case in enumerate(tqdm(cases, desc="zsdseg eval", unit="case", file=sys.stderr, disable=not terminal), start=1):
        try:
            records.append(evaluate_case(case, segmenter, args, params, out_dir, refiner))
            if not terminal:
                print(f"zsdseg eval: {number}/{len(cases)} {case.name}: {records[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
        except Exception as error:  # noqa: BLE001 -- one bad case must not end a 100-case run
            message = f"{type(error).__name__}: {error}"
            tqdm.write(f"zsdseg eval: {number}/{len(cases)} {case.name} failed: {message}", file=sys.stderr)
            records.append({"name": case.name, "status": "failed", "image": str(case.image_path), "error": message})

    summary = report.summarize_modes(records, modes)
    meta = {
        "dataset": "/".join(Path(args.root).resolve().parts[-2:]),  # 'busi-subset/malignant', not just 'malignant'
        **report.run_stamp("eval"),
        "model": args.model,
        "meaningless": report.is_meaningless(args.model),
        "device": str(getattr(segmenter, "device", "")) or None,
        "layout": args.layout,
        "kind": cases[0].kind,
        "root": str(args.root),
        "selection": args.selection,
        "prompt": args.prompt,
        "params": params.to_dict(),
        "modes": modes,
        "provenance": segmenter.provenance() if segmenter is not None else None,
        "sam": sam_rows.provenance(refiner),
    }
    report.write_results_json(out_dir / "results.json", meta, summary, records)
    report.write_report_md(out_dir / "report.md", meta, summary, records)
    _print_summary(summary, records, out_dir, meta["meaningless"])
    return 0 if any(r["status"] == "ok" for r in records) else 1


def _print_summary(summary, records, out_dir: Path, meaningless: bool) -> None:
    failed = sum(1 for r in records if r["status"] != "ok")
    if meaningless:
        print("meaningless: random weights")
    for mode, metrics in summary.items():
        dice = metrics["dice"]
        print(f"{mode:14s} Dice {dice['mean']:.3f} ± {dice['sd']:.3f}  median {dice['median']:.3f}  n={dice['n']}")
    print(f"{len(records) - failed} cases evaluated, {failed} failed; report: {out_dir / 'report.md'}")
