"""Seconds per repainted slice of --pseudo-healthy against the segmentation pass of one slice, measured in the
same run, and peak RSS. Random weights: speed only, the masks mean nothing.

    python benchmarks/pseudo_healthy.py [REPEATS] [MODEL] [DEVICE]      # default: 1 random:sd15 cpu
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np
import torch

from ZeroShotDiffusionSegLib.engine import DiffusionSegmenter, load_backbone
from ZeroShotDiffusionSegLib.engine.healthy_params import PseudoHealthyParams
from ZeroShotDiffusionSegLib.engine.pseudo_healthy import PseudoHealthyInpainter
from ZeroShotDiffusionSegLib.engine.residuals import refine_batch


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def synthetic_slice(size: int = 512):
    """A CT-like grey slice with a darker disc, and the disc as the candidate."""
    rows, columns = np.mgrid[0:size, 0:size]
    lesion = np.hypot(rows - 250, columns - 270) < 40
    noise = np.random.default_rng(0).normal(0, 0.02, (size, size))
    return np.clip(np.where(lesion, 0.3, 0.55) + noise, 0, 1).astype(np.float32), lesion


def main(repeats: int, model: str, device: str) -> dict:
    out = {"model": model, "device": device, "torch_threads": torch.get_num_threads()}
    started = time.perf_counter()
    backbone = load_backbone(model, device=device)
    out["load_s"] = time.perf_counter() - started
    out["rss_after_load_gib"] = peak_rss_gib()
    image, lesion = synthetic_slice(backbone.resolution)

    segmenter = DiffusionSegmenter(backbone)
    segment_s = []
    for _ in range(2):  # the first pass warms up
        started = time.perf_counter()
        segmenter.segment_batch([image], prompt="liver tumor")
        segment_s.append(time.perf_counter() - started)
    out["segment_s_per_slice_batch1"] = segment_s
    out["rss_after_segment_gib"] = peak_rss_gib()

    params = PseudoHealthyParams()
    inpainter = PseudoHealthyInpainter(backbone)
    runs = []
    for key in range(repeats):
        step_times = []
        started = time.perf_counter()
        refine_batch(inpainter, [image], [lesion], [key], params, "healthy liver", "liver tumor",
                     on_step=lambda step, latents: step_times.append(time.perf_counter()))
        total = time.perf_counter() - started
        runs.append({"total_s": total, "steps": len(step_times), "first_step_at_s": step_times[0] - started,
                     "mean_step_s": (step_times[-1] - step_times[0]) / max(len(step_times) - 1, 1),
                     "after_last_step_s": started + total - step_times[-1]})
    out["healthy_runs"] = runs
    out["params"] = params.to_dict()
    out["rss_peak_gib"] = peak_rss_gib()
    ratio = min(run["total_s"] for run in runs) / min(segment_s)
    out["healthy_over_segment_per_slice"] = ratio
    out["share_of_run_at_10pct_candidates"] = 0.1 * ratio / (1 + 0.1 * ratio)
    return out


if __name__ == "__main__":
    arguments = sys.argv[1:]
    result = main(int(arguments[0]) if arguments else 1, arguments[1] if len(arguments) > 1 else "random:sd15",
                  arguments[2] if len(arguments) > 2 else "cpu")
    print(json.dumps(result, indent=1))
