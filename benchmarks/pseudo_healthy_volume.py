"""The pseudo-healthy stage inside a whole volume run: seconds per segmented slice and per repainted slice, both
from the stage timings of one ``run_volume`` with ``--pseudo-healthy`` (batches as the pipeline makes them), and
from them the stage's share of a run in which a given fraction of the slices holds a candidate.

Random weights cannot be steered to select a chosen fraction of slices (they select on nearly every slice), so
the fraction is applied to the two measured per-slice costs; the share of the measured run itself is printed
too. Speed only: with random weights the masks mean nothing.

    python benchmarks/pseudo_healthy_volume.py [SLICES] [CANDIDATE_FRACTION] [MODEL] [DEVICE]
    # default: 4 0.1 random:sd15 cpu
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ZeroShotDiffusionSegLib.engine import DiffusionSegmenter, load_backbone
from ZeroShotDiffusionSegLib.engine.healthy_params import PseudoHealthyParams
from ZeroShotDiffusionSegLib.evaluation.bench import _write_volume, synthetic_ct
from ZeroShotDiffusionSegLib.volume import VolumeRequest, run_volume


def main(slices: int, fraction: float, model: str, device: str) -> dict:
    segmenter = DiffusionSegmenter(load_backbone(model, device=device))
    with tempfile.TemporaryDirectory() as scratch:
        volume = Path(scratch) / "ct.nrrd"
        ct = synthetic_ct(512, slices)
        _write_volume(ct, volume)
        # One untimed engine pass first: first-call costs (allocator, lazy imports) are not per-slice costs.
        segmenter.segment_batch([np.clip((ct[0].astype(np.float32) + 1000.0) / 1400.0, 0.0, 1.0)], prompt="tumor")
        request = VolumeRequest(prompt="tumor", batch_size=4, pseudo_healthy=PseudoHealthyParams())
        started = time.perf_counter()
        result = run_volume(volume, Path(scratch) / "out", segmenter, request)
        total = time.perf_counter() - started
        provenance = json.loads(Path(result.files["provenance"]).read_text(encoding="utf-8"))
    repainted = provenance["pseudo_healthy"]["slices_repainted"]
    segmented = provenance["runtime"]["slices_through_engine"]
    timings = dict(result.timings)
    per_segmented = (total - timings["pseudo_healthy"]) / segmented  # everything but the repaint, per slice
    per_repainted = timings["pseudo_healthy"] / max(repainted, 1)
    return {
        "model": model, "device": device, "slices": slices, "slices_segmented": segmented, "slices_repainted": repainted,
        "total_s": total, "timings_s": timings, "share_in_this_run": timings["pseudo_healthy"] / total,
        "seconds_per_segmented_slice": per_segmented, "seconds_per_repainted_slice": per_repainted,
        "repaint_over_segment_per_slice": per_repainted / per_segmented, "candidate_fraction": fraction,
        "share_at_candidate_fraction": fraction * per_repainted / (per_segmented + fraction * per_repainted),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


if __name__ == "__main__":
    arguments = sys.argv[1:]
    record = main(int(arguments[0]) if arguments else 4, float(arguments[1]) if len(arguments) > 1 else 0.1,
                  arguments[2] if len(arguments) > 2 else "random:sd15", arguments[3] if len(arguments) > 3 else "cpu")
    print(json.dumps(record, indent=1))
