"""Batch throughput (embedded vs Ray with 1 and 2 actors) and the time to write a DICOM SEG.

    python benchmarks/cohort_batch.py [--cases 8] [--size 64] [--slices 4] [--skip-dicom]

Runs `zsdseg batch` in this process with random:tiny on the CPU (random weights: speed only), on
synthetic volumes in a temporary folder. The Ray rows use a local cluster started here with 2 CPUs
(its start-up is reported apart); each Ray actor takes 1 CPU, so torch uses 1 thread per actor while
the embedded run uses all of them; Ray's own cost per case is measured against an embedded run on 1 thread.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "ZeroShotDiffusionSeg"), str(ROOT / "ZeroShotDiffusionSeg" / "Testing" / "pytest")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_cases(folder: Path, count: int, size: int, slices: int) -> Path:
    from test_volume_fixtures import sphere_volume, write

    rows = ["path,case_id"]
    for n in range(count):
        image, _ = sphere_volume(size=(size, size, slices), centre_index=(size // 2, size // 2, slices // 2),
                                 radius_mm=6 + n % 3, spacing=(0.8, 0.8, 2.0), noise_hu=10)
        write(image, folder / f"v{n}.nrrd")
        rows.append(f"v{n}.nrrd,case{n}")
    (folder / "cases.csv").write_text("\n".join(rows) + "\n")
    return folder / "cases.csv"


def timed_batch(manifest: Path, out: Path, *extra: str) -> float:
    from ZeroShotDiffusionSegLib.cli import main

    start = time.perf_counter()
    code = main(["batch", str(manifest), "--out-dir", str(out), "--prompt", "liver tumor", "--model", "random:tiny",
                 "--device", "cpu", "--batch-size", "4", "--progress", "none", *extra])
    if code != 0:
        raise SystemExit(f"batch failed with exit status {code}")
    return time.perf_counter() - start


def dicom_seg_seconds(folder: Path) -> dict:
    import numpy as np
    import SimpleITK as sitk
    from dicom_fixtures import write_ct_series
    from test_volume_fixtures import sphere_volume

    from ZeroShotDiffusionSegLib.dicom.seg import build_segmentation, read_source_series, write_segmentation
    from ZeroShotDiffusionSegLib.dicom.series import choose_series

    image, sphere = sphere_volume(size=(512, 512, 100), centre_index=(256, 256, 50), radius_mm=40,
                                  spacing=(0.7, 0.7, 2.5), more_spheres=[((120, 140, 30), 15.0), ((380, 300, 70), 20.0)])
    write_ct_series(image, folder / "series")
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(sphere.astype(np.uint8)))).astype(np.uint16)
    start = time.perf_counter()
    sources = read_source_series(choose_series(folder / "series"))
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    seg = build_segmentation(sources, labels, mode="prompt", prompt="liver tumor", model_id="random:tiny",
                             random_weights=True)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    path = write_segmentation(seg, folder / "seg.dcm")
    write_s = time.perf_counter() - start
    return {"size": [512, 512, 100], "lesions": int(labels.max()), "read_sources_s": round(read_s, 2),
            "build_s": round(build_s, 2), "write_s": round(write_s, 2), "total_s": round(read_s + build_s + write_s, 2),
            "file_mb": round(path.stat().st_size / 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--skip-dicom", action="store_true")
    args = parser.parse_args()
    import ray
    import torch

    report = {"cases": args.cases, "volume": [args.size, args.size, args.slices], "model": "random:tiny",
              "cpus": os.cpu_count(), "torch_threads_embedded": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        manifest = make_cases(scratch, args.cases, args.size, args.slices)
        embedded = timed_batch(manifest, scratch / "embedded")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a 1-CPU Ray actor: isolates Ray's own cost per case
        embedded_one_thread = timed_batch(manifest, scratch / "embedded1")
        torch.set_num_threads(threads)
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path[:2]), "HF_HUB_OFFLINE": "1"}})
        report["ray_start_s"] = round(time.perf_counter() - start, 2)
        rows = {"embedded": embedded, "embedded_1_thread": embedded_one_thread}
        for workers in (1, 2):
            rows[f"ray_{workers}_actor{'s' if workers > 1 else ''}"] = timed_batch(
                manifest, scratch / f"ray{workers}", "--ray", "auto", "--workers", str(workers))
        ray.shutdown()
        report["seconds"] = {name: round(value, 2) for name, value in rows.items()}
        report["cases_per_minute"] = {name: round(60 * args.cases / value, 1) for name, value in rows.items()}
        report["ray_overhead_per_case_s"] = round((rows["ray_1_actor"] - embedded_one_thread) / args.cases, 3)
        if not args.skip_dicom:
            report["dicom_seg_512x512x100"] = dicom_seg_seconds(scratch)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
