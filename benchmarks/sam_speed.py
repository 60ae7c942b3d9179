"""Seconds and memory of the LiteMedSAM boundary stage on this machine, as JSON.

    python benchmarks/sam_speed.py [--slices 8] [--size 512] [--boxes 2] [--device cpu]

Synthetic slices (a bright disk on noise; the content does not change the cost). Reports the
weight load (with the sha256 check), the image encoder per slice (one at a time and in the stage's
batches), the mask decoder per box, and the process's peak RSS before and after.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--boxes", type=int, default=2, help="boxes per slice")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import torch

    from ZeroShotDiffusionSegLib.engine.boundary import ENCODE_BATCH, BoundaryRefiner

    rss_start = peak_rss_mib()
    started = time.perf_counter()
    refiner = BoundaryRefiner(device=args.device)
    load_s = time.perf_counter() - started
    rows, cols = np.mgrid[: args.size, : args.size]
    rng = np.random.default_rng(0)
    images = [np.clip(0.3 + 0.4 * ((rows - args.size / 2) ** 2 + (cols - args.size / 2 - i) ** 2 < (args.size / 6) ** 2)
                      + 0.05 * rng.standard_normal((args.size, args.size)), 0, 1) for i in range(args.slices)]
    side = args.size // 3
    boxes = [[(side + j, side, 2 * side + j, 2 * side) for j in range(args.boxes)] for _ in images]

    refiner.refine_many(images[:1], boxes[:1])  # warm-up
    started = time.perf_counter()
    for image, image_boxes in zip(images, boxes):
        refiner.refine_many([image], [image_boxes])
    single_s = (time.perf_counter() - started) / args.slices
    started = time.perf_counter()
    refiner.refine_many(images, boxes)
    batched_s = (time.perf_counter() - started) / args.slices

    from ZeroShotDiffusionSegLib.engine.boundary import SamFrame

    frame = SamFrame(args.size, args.size)
    with torch.no_grad():
        embedding = refiner.model.image_encoder(frame.to_model(images[0])[None].to(refiner.device))
        box_tensor = torch.as_tensor(np.stack([frame.box_to_model(b) for b in boxes[0]]), dtype=torch.float32, device=refiner.device)
        started = time.perf_counter()
        for _ in range(10):
            refiner.model.decode(embedding, box_tensor)
        decode_per_box_s = (time.perf_counter() - started) / (10 * len(boxes[0]))

    print(json.dumps({
        "device": str(refiner.device), "torch_threads": torch.get_num_threads(), "slice_size": args.size,
        "slices": args.slices, "boxes_per_slice": args.boxes, "encode_batch": ENCODE_BATCH,
        "load_s": round(load_s, 3),
        "seconds_per_slice_one_at_a_time": round(single_s, 3),
        "seconds_per_slice_batched": round(batched_s, 3),
        "decode_seconds_per_box": round(decode_per_box_s, 4),
        "peak_rss_mib_before": round(rss_start, 1), "peak_rss_mib_after": round(peak_rss_mib(), 1),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
