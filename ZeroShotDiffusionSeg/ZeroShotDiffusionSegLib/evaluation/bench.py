"""``zsdseg bench``: seconds per stage, the ratio of the whole pipeline to bare UNet+VAE passes
measured in the same run, peak memory; JSON to ``--out`` and a short table on the terminal.

The input is a synthetic CT-like volume (a body ellipse with a denser blob, air around it) written
to a temporary NRRD, so reading and writing are real. The timed run is ``run_volume`` in prompt
mode, which sends every slice through the engine once. Random weights are fine: speed does not
depend on weight values.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
import numpy as np

from ..engine.types import SegmentationParams
from ..errors import UserError
from . import report

ENGINE_STAGES = ("text", "preprocess", "vae", "unet", "merging", "selection")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="random:sd15", help="hub id, local folder or random:tiny|random:sd15|random:sd21base (default: %(default)s)")
    parser.add_argument("--size", type=int, default=512, help="slice width and height in pixels (default: %(default)s)")
    parser.add_argument("--slices", type=int, default=4, help="slices in the synthetic volume (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=1, help="slices per engine pass (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="fp32, fp16, bf16 (default: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--prompt", default="tumor", help="prompt of the timed run (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed engine passes before timing (default: %(default)s)")
    parser.add_argument("--out", default=None, help="write the JSON record here")


def synthetic_ct(size: int, slices: int, seed: int = 0) -> np.ndarray:
    """(slices, size, size) int16 in HU: air, a soft-tissue ellipse with noise, a denser round blob."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    body = ((rows - 0.5) / 0.42) ** 2 + ((cols - 0.5) / 0.35) ** 2 <= 1.0
    volume = np.full((slices, size, size), -1000, dtype=np.int16)
    for index in range(slices):
        plane = np.where(body, 40.0, -1000.0) + rng.normal(0.0, 12.0, (size, size))
        radius = 0.06 + 0.04 * np.sin(np.pi * (index + 0.5) / max(slices, 1))
        plane[((rows - 0.45) ** 2 + (cols - 0.55) ** 2) <= radius**2] += 60.0
        volume[index] = np.clip(plane, -1024, 3071).astype(np.int16)
    return volume


def _write_volume(volume: np.ndarray, path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((0.7, 0.7, 2.5))
    sitk.WriteImage(image, str(path), useCompression=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _cuda(segmenter):
    device = getattr(segmenter, "device", "cpu")
    if getattr(device, "type", str(device)).startswith("cuda"):
        import torch

        return torch
    return None


def run_benchmark(segmenter, size: int, slices: int, batch_size: int, prompt: str = "tumor", warmup: int = 1) -> dict:
    """Time one ``run_volume`` over a synthetic volume, then the bare passes over the same slices.

    Stage seconds are nested inside ``total_s``: the pipeline's read/prepare/consolidate/write, the
    engine's per-stage sums, and ``other`` (the rest: slice extraction, batching, inserting results)."""
    from ..volume import VolumeRequest, run_volume

    if size < 8 or slices < 1 or batch_size < 1:
        raise UserError("--size must be >= 8, --slices and --batch-size >= 1")
    with tempfile.TemporaryDirectory(prefix="zsdseg-bench-") as scratch_name:
        scratch = Path(scratch_name)
        volume = synthetic_ct(size, slices)
        input_path = scratch / "synthetic_ct.nrrd"
        _write_volume(volume, input_path)
        # The engine sees the slices the way the pipeline windows them; for the bare passes and
        # warm-up any [0, 1] image of the right size is as good (speed does not depend on content).
        unit_slices = [np.clip((plane.astype(np.float32) + 1000.0) / 1400.0, 0.0, 1.0) for plane in volume]
        for _ in range(warmup):  # first-call costs (allocator, prompt encoding, lazy imports) are not per-slice costs
            segmenter.segment_batch(unit_slices[:batch_size], prompt=prompt)
            segmenter.time_bare_passes(unit_slices[:batch_size], prompt=prompt)
        torch = _cuda(segmenter)
        if torch is not None:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

        started = time.perf_counter()
        result = run_volume(input_path, scratch / "out", segmenter,
                            VolumeRequest(prompt=prompt, mode="prompt", batch_size=batch_size, params=SegmentationParams()))
        total = time.perf_counter() - started
        cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20 if torch is not None else None
        runtime = json.loads(Path(result.files["provenance"]).read_text(encoding="utf-8"))["runtime"]

        bare = {"vae": 0.0, "unet": 0.0}
        for start in range(0, slices, runtime["batch_size_final"]):
            passes = segmenter.time_bare_passes(unit_slices[start:start + runtime["batch_size_final"]], prompt=prompt)
            bare = {stage: bare[stage] + float(passes[stage]) for stage in bare}

    pipeline = result.timings
    engine = runtime["engine_timings_s"]
    stages = {
        "io": pipeline.get("read", 0.0) + pipeline.get("write", 0.0),
        "prepare": pipeline.get("prepare", 0.0),
        **{("unet_capture" if stage == "unet" else stage): float(engine.get(stage, 0.0)) for stage in ENGINE_STAGES},
        "consolidation": pipeline.get("consolidate", 0.0),
    }
    stages["other"] = max(total - sum(stages.values()), 0.0)
    bare_total = bare["vae"] + bare["unet"]
    return {
        "size": size,
        "slices": slices,
        "slices_segmented": runtime["slices_through_engine"],
        "batch_size": batch_size,
        "batch_size_final": runtime["batch_size_final"],
        "prompt": prompt,
        "warmup_passes": warmup,
        "total_s": total,
        "per_slice_s": total / slices,
        "stages_s": stages,
        "bare_s": {"vae": bare["vae"], "unet": bare["unet"], "total": bare_total},
        "ratio_pipeline_to_bare": total / bare_total if bare_total > 0 else None,
        "ratio_unet_capture_to_bare": stages["unet_capture"] / bare["unet"] if bare["unet"] > 0 else None,
        "peak_rss_mb": peak_rss_mb(),
        "cuda_max_allocated_mb": cuda_peak_mb,
        "pipeline_timings_s": dict(pipeline),
    }


def print_table(record: dict, stream=None) -> None:
    stream = stream or sys.stdout  # looked up per call, so a redirected stdout is honoured
    total = record["total_s"]
    print(f"{record['model']} on {record['device']} ({record['dtype']}): {record['slices']} slices of "
          f"{record['size']}x{record['size']}, batch {record['batch_size']}", file=stream)
    for stage, seconds in record["stages_s"].items():
        print(f"  {stage:14s} {seconds:9.3f} s  {100.0 * seconds / total if total else 0.0:5.1f} %", file=stream)
    print(f"  {'total':14s} {total:9.3f} s  ({record['per_slice_s']:.3f} s per slice)", file=stream)
    print(f"  bare VAE + UNet {record['bare_s']['total']:8.3f} s  -> pipeline / bare = {record['ratio_pipeline_to_bare']:.2f}", file=stream)
    cuda = record["cuda_max_allocated_mb"]
    print(f"  peak RSS {record['peak_rss_mb']:.0f} MiB" + (f", CUDA max allocated {cuda:.0f} MiB" if cuda is not None else ""), file=stream)


def run(args) -> int:
    from ..engine import DiffusionSegmenter, load_backbone

    started = time.perf_counter()
    segmenter = DiffusionSegmenter(load_backbone(args.model, device=args.device, dtype=args.dtype))
    load_s = time.perf_counter() - started
    record = run_benchmark(segmenter, args.size, args.slices, args.batch_size, args.prompt, args.warmup)
    provenance = segmenter.provenance()
    record = {
        **report.run_stamp("bench"),
        "model": args.model,
        "random_weights": report.is_meaningless(args.model),
        "device": provenance.get("device"),
        "dtype": provenance.get("dtype"),
        "model_resolution": getattr(segmenter, "model_resolution", None),
        "load_s": load_s,
        **record,
    }
    print_table(record)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"written: {args.out}")
    return 0
