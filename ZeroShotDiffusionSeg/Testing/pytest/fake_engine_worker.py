"""Stand-in for the engine, run as a real subprocess by the runner/worker tests.

It runs the real worker loop (``ZeroShotDiffusionSegLib.worker.serve``) with a fake model
loader and a fake ``run_volume``, so the protocol, stdout hygiene, error handling and the
runner's process management are tested without torch. The request's prompt picks the
behaviour:

  any prompt     progress 0.5 / 1.0, then a known labelmap (two boxes), score map, lesions.csv
  "slow"         starts a grandchild (sleep), writes pids.json, then progresses for a minute
  "crash"        writes an out-of-memory line to stderr and exits with code 3 mid-job
  "user-error"   raises UserError (the worker must survive it)
  model "fake:fail"   fails to load with ModelLoadError
"""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ZeroShotDiffusionSegLib import worker
from ZeroShotDiffusionSegLib.errors import ModelLoadError, UserError
from ZeroShotDiffusionSegLib.progress import ProgressEvent, check_cancel
from ZeroShotDiffusionSegLib.volume.request import VolumeResult

# Known labelmap, in array (k, j, i) order: lesion 1 is the larger box.
LESION_BOXES = {1: (slice(1, 4), slice(2, 6), slice(1, 5)), 2: (slice(5, 6), slice(0, 2), slice(6, 8))}
LESION_SCORE = {1: 0.9, 2: 0.6}
BACKGROUND_SCORE = 0.1


def fake_load(model, device, dtype):
    if model == "fake:fail":
        raise ModelLoadError("weights for fake:fail not found; download them or choose a local folder")
    print("fake engine loaded", flush=True)  # a stray print: must not reach the protocol stream
    return object(), device if device != "auto" else "cpu"


def fake_run_volume(input_path, out_dir, segmenter, request, progress=None, cancel=None):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image = sitk.ReadImage(str(input_path))
    prompt = request.prompt or ""
    if prompt == "user-error":
        raise UserError("the ROI is outside the volume")
    if prompt == "crash":
        print("RuntimeError: CUDA error: out of memory", file=sys.stderr, flush=True)
        os._exit(3)
    if prompt == "slow":
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        (out / "pids.json").write_text(json.dumps({"worker": os.getpid(), "grandchild": grandchild.pid}))
        for step in range(600):
            check_cancel(cancel)
            progress(ProgressEvent("segmenting slices", step / 600, (600 - step) * 0.1, f"slice {step}"))
            time.sleep(0.1)
    progress(ProgressEvent("segmenting slices", 0.5, 1.0, "half way"))
    labels = np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype=np.uint8)
    for label, box in LESION_BOXES.items():
        labels[box] = label
    score = np.full(labels.shape, BACKGROUND_SCORE, dtype=np.float32)
    for label, value in LESION_SCORE.items():
        score[labels == label] = value
    files = {}
    for name, array in (("labels", labels), ("score", score)):
        result = sitk.GetImageFromArray(array)
        result.CopyInformation(image)
        files[name] = out / f"{name}.nrrd"
        sitk.WriteImage(result, str(files[name]))
    rows = [{"label": label, "voxels": int((labels == label).sum())} for label in LESION_BOXES]
    files["lesions"] = out / "lesions.csv"
    with open(files["lesions"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["label", "voxels"])
        writer.writeheader()
        writer.writerows(rows)
    files["provenance"] = out / "provenance.json"
    files["provenance"].write_text(json.dumps({"engine": "fake", "prompt": prompt}))
    progress(ProgressEvent("writing results", 1.0, 0.0, "done"))
    return VolumeResult(out, files, rows, {"total": 0.0}, [f"fake engine segmented '{prompt}'"])


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    worker.add_arguments(parser)
    sys.exit(worker.serve(parser.parse_args(), load=fake_load, run_volume=fake_run_volume))
