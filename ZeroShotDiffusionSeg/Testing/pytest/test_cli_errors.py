"""Every user error of ``zsdseg segment`` is one line ``zsdseg: error: ...`` with exit 2, and every
check that needs no model runs before the model loads (the model named here does not exist:
loading it would fail with a different message)."""

import os
import re
import struct
import zlib

import numpy as np
import pytest
import SimpleITK as sitk

from ZeroShotDiffusionSegLib.cli import main

NO_MODEL = ["--model", "nobody/not-a-model"]


def write_png_of_size(path, width, height):
    """A valid greyscale PNG of any size in a few hundred kB: rows of zeros compress to almost nothing."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def write_volume(path, array, spacing=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), True)
    return path


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    ct = (rng.normal(40, 20, (6, 24, 24)) + 300 * (np.arange(24) > 12)).astype(np.int16)
    air = np.full((6, 24, 24), -1000, np.int16)
    air[0, 0, 0] = -995
    write_png_of_size(tmp_path / "photo.png", 40, 30)
    (tmp_path / "folder.png").mkdir()
    return {
        "CT": str(write_volume(tmp_path / "ct.nrrd", ct)),
        "AIR": str(write_volume(tmp_path / "air.nrrd", air)),
        "THIN": str(write_volume(tmp_path / "thin.nrrd", rng.normal(0, 100, (20, 1, 1)).astype(np.float32))),
        "PNG": str(tmp_path / "photo.png"),
        "BOMB": str(write_png_of_size(tmp_path / "bomb.png", 20000, 20000)),
        "OUT": str(tmp_path / "out"),
        "DIR": str(tmp_path / "folder.png"),
        "NOWHERE": str(tmp_path / "no" / "such" / "m.png"),
    }


CASES = [
    (["CT", "--out-dir", "OUT", "--seed-ras=nan,0,0"], r"seed point .* must be a finite number in \[-1000000, 1000000\] mm, got nan"),
    (["CT", "--out-dir", "OUT", "--seed-ras=inf,0,0"], r"seed point .* must be a finite number in \[-1000000, 1000000\] mm, got inf"),
    (["CT", "--out-dir", "OUT", "--prompt", "x", "--grid-points", "100000"], r"grid points \(grid_points, --grid-points\) must be in \[1, 64\]"),
    (["PNG", "--out", "OUT.png", "--prompt", "x", "--grid-points", "100000"], r"grid points \(grid_points, --grid-points\) must be in \[1, 64\]"),
    (["CT", "--out-dir", "OUT", "--prompt", "x", "--min-volume", "nan"], r"minimum lesion volume \(min_volume_mm3, --min-volume\) must be a finite number"),
    (["PNG", "--prompt", "x", "--out", "DIR"], r"--out .*folder.png is a folder; give a file name ending in .png"),
    (["PNG", "--prompt", "x", "--out", "NOWHERE"], r"output folder does not exist"),
    (["PNG", "--prompt", "x", "--out", "m.jpg"], r"--out m.jpg: outputs are written as PNG"),
    (["BOMB", "--prompt", "x", "--out", "m.png"], r"bomb.png has 400000000 pixels; at most 67108864 \(8192 x 8192\) are accepted"),
    (["CT", "--out-dir", "OUT", "--prompt", "x", "--server", "ftp://x"], r"--server takes an http:// or https:// URL"),
    (["PNG", "--out", "m.png", "--prompt", "x", "--server", "http://127.0.0.1:9"], r"the server segments volumes .* photo.png is a 2-D image"),
    (["AIR", "--out-dir", "OUT", "--prompt", "x"], r"no slice inside the ROI holds anything but air"),
    (["CT", "--out-dir", "OUT", "--prompt", "x", "--roi", "3,3,3,3,3,3", "--roi-space", "voxel"],
     r"the ROI is 1 x 1 voxels in the slice plane .* at least 8 x 8"),
    (["THIN", "--out-dir", "OUT", "--prompt", "x", "--axis", "k"], r"the volume is 1 x 1 voxels in the slice plane"),
    (["PNG", "--out", "m.png", "--seed-ras", "1,2,3"], r"--seed-ras is for 3-D volumes; photo.png is a 2-D image"),
    (["PNG", "--out", "m.png", "--prompt", "x", "--progress", "json"], r"--progress json is for 3-D volumes"),
    (["PNG", "--out", "m.png", "--mode", "unsupervised", "--prompt", "x"], r"--prompt does nothing with --mode unsupervised"),
    (["CT", "--out-dir", "OUT", "--prompt", "x", "--window", "350/nan"], r"--window must be WIDTH/LEVEL"),
    (["CT", "--out-dir", "OUT", "--prompt", "x", "--batch-size", "0"], r"batch size \(batch_size, --batch-size\) must be in \[1, 256\]"),
    (["CT", "--out-dir", "OUT", "--prompt", "x", "--device", "cpu", "--dtype", "fp16"], r"--dtype fp16 needs a GPU"),
    (["CT", "--out-dir", "OUT", "--prompt", "x", "--seed-ras", "1,2"], r"argument --seed-ras: a seed point X,Y,Z \(mm\) takes 3"),
]


@pytest.mark.parametrize("arguments, pattern", CASES, ids=[" ".join(a[1:])[:40] for a, _ in CASES])
def test_user_errors_are_one_line_before_the_model_loads(arguments, pattern, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["segment"] + [inputs.get(a, a) for a in arguments] + NO_MODEL
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors exit from parse_args
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("zsdseg: error: "), err
    assert re.search(pattern, err[0]), err[0]
    assert not os.path.exists(inputs["OUT"]) and not (tmp_path / "m.png").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_an_unwritable_output_folder_is_refused_before_the_model_loads(inputs, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code = main(["segment", inputs["PNG"], "--prompt", "x", "--out", str(locked / "m.png"), *NO_MODEL])
    assert code == 2 and "is not writable" in capsys.readouterr().err


@pytest.mark.parametrize("arguments, pattern", [
    ([], r"the following arguments are required: --out"),
    (["--out", "OUT", "--prompt", "tumor"], r"--prompt needs --model: the weight-free baselines do not read a prompt"),
])
def test_eval_refuses_without_an_output_folder_or_a_prompt_without_a_model(arguments, pattern, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["eval", str(tmp_path), *[str(tmp_path / "out") if a == "OUT" else a for a in arguments]])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.search(pattern, err[0]), err
    assert not (tmp_path / "zsdseg-eval").exists() and not (tmp_path / "out").exists()
