"""Seconds per repainted slice of --pseudo-healthy against the segmentation pass of one slice, measured in the
same run, and peak RSS. Random weights: speed only, the masks mean nothing.

    python benchmarks/pseudo_healthy.py [REPEATS] [MODEL] [DEVICE]      # default: 1 random:sd15 cpu
"""
import json, resource, sys, time
import numpy as np, torch
from ZeroShotDiffusionSegLib.engine import DiffusionSegmenter, load_backbone
from ZeroShotDiffusionSegLib.engine.healthy_params import PseudoHealthyParams
from ZeroShotDiffusionSegLib.engine.pseudo_healthy import PseudoHealthyInpainter
from ZeroShotDiffusionSegLib.engine.residuals import refine_batch

def rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

out = {"torch_threads": torch.get_num_threads()}
model = sys.argv[2] if len(sys.argv) > 2 else "random:sd15"
device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
t = time.perf_counter(); backbone = load_backbone(model, device=device); out["load_s"] = time.perf_counter() - t
out["model"], out["device"] = model, device
out["rss_after_load_gib"] = rss_gib()
rng = np.random.default_rng(0)
rows, cols = np.mgrid[0:512, 0:512]
lesion = np.hypot(rows - 250, cols - 270) < 40
image = np.where(lesion, 0.3, 0.55).astype(np.float32) + rng.normal(0, 0.02, (512, 512)).astype(np.float32)
image = np.clip(image, 0, 1)
segmenter = DiffusionSegmenter(backbone)
seg = []
for _ in range(2):
    t = time.perf_counter(); segmenter.segment_batch([image], prompt="liver tumor"); seg.append(time.perf_counter() - t)
out["segment_s_per_slice_batch1"] = seg
out["rss_after_segment_gib"] = rss_gib()
params = PseudoHealthyParams()
inpainter = PseudoHealthyInpainter(backbone)
steps = []
def on_step(step, latents):
    steps.append(time.perf_counter())
runs = []
for key in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
    steps.clear()
    t = time.perf_counter()
    result = refine_batch(inpainter, [image], [lesion], [key], params, "healthy liver", "liver tumor", on_step=on_step)[0]
    total = time.perf_counter() - t
    runs.append({"total_s": total, "first_step_at_s": steps[0] - t, "steps": len(steps),
                 "mean_step_s": (steps[-1] - steps[0]) / max(len(steps) - 1, 1), "after_last_step_s": t + total - steps[-1],
                 "refined_pixels": int(result.mask.sum()), "region_pixels": int(result.region.sum())})
out["healthy_runs"] = runs
out["params"] = params.to_dict()
out["rss_peak_gib"] = rss_gib()
seg_s, healthy_s = min(seg), min(r["total_s"] for r in runs)
out["share_of_run_at_10pct_candidates"] = 0.1 * healthy_s / (seg_s + 0.1 * healthy_s)
out["healthy_over_segment_per_slice"] = healthy_s / seg_s
print(json.dumps(out, indent=1))
