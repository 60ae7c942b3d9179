"""Seconds per repainted slice of --pseudo-healthy when slices are repainted one at a time against in one batch,
measured in one run (one slice alone, the batch, the other slices alone, so drift of the machine falls on both).
Random weights: speed only.

    python benchmarks/pseudo_healthy_batch.py [BATCH] [MODEL] [DEVICE]      # default: 4 random:sd15 cpu
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from ZeroShotDiffusionSegLib.engine import load_backbone
from ZeroShotDiffusionSegLib.engine.healthy_params import PseudoHealthyParams
from ZeroShotDiffusionSegLib.engine.pseudo_healthy import PseudoHealthyInpainter
from ZeroShotDiffusionSegLib.engine.residuals import refine_batch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from pseudo_healthy import synthetic_slice  # noqa: E402  (the same slice as the single-slice benchmark)


def main(batch: int, model: str, device: str) -> dict:
    backbone = load_backbone(model, device=device)
    image, lesion = synthetic_slice(backbone.resolution)
    inpainter, params = PseudoHealthyInpainter(backbone), PseudoHealthyParams()

    def repaint(keys) -> float:
        started = time.perf_counter()
        refine_batch(inpainter, [image] * len(keys), [lesion] * len(keys), list(keys), params, "healthy liver",
                     "liver tumor")
        return time.perf_counter() - started

    repaint([0])  # warm-up: pipeline construction and first-call costs
    alone = [repaint([key]) for key in range(1, 1 + batch // 2)]
    together = repaint(range(batch))
    alone += [repaint([key]) for key in range(1 + batch // 2, 1 + batch)]
    return {"model": model, "device": device, "torch_threads": torch.get_num_threads(), "batch": batch,
            "alone_s": alone, "alone_s_per_slice": float(np.mean(alone)), "batch_s": together,
            "batch_s_per_slice": together / batch, "batch_over_alone_per_slice": together / batch / float(np.mean(alone))}


if __name__ == "__main__":
    arguments = sys.argv[1:]
    print(json.dumps(main(int(arguments[0]) if arguments else 4, arguments[1] if len(arguments) > 1 else "random:sd15",
                          arguments[2] if len(arguments) > 2 else "cpu"), indent=1))
