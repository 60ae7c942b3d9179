"""`zsdseg segment` on 2-D images, end to end with random:tiny, and its one-line errors."""

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ZeroShotDiffusionSegLib.cli import main

TINY = ["--model", "random:tiny", "--device", "cpu"]


@pytest.fixture()
def lesion_png(tmp_path):
    """A 90 x 130 (rows x columns) RGB picture with a dark blob, like a dermoscopy image."""
    rows, cols = np.mgrid[0:90, 0:130]
    blob = ((rows - 45) ** 2 + (cols - 70) ** 2) < 20 ** 2
    image = np.stack([np.where(blob, 60, 200)] * 3, axis=-1).astype(np.uint8)
    path = tmp_path / "lesion.png"
    Image.fromarray(image).save(path)
    return path


def read(path):
    return np.asarray(Image.open(path))


def test_prompt_mode_writes_mask_heatmap_and_labels_at_input_size(lesion_png, tmp_path, capsys):
    out, heat, labels = tmp_path / "mask.png", tmp_path / "heat.png", tmp_path / "labels.png"
    code = main(["segment", str(lesion_png), "--prompt", "skin lesion", "--out", str(out), "--heatmap", str(heat),
                 "--labels", str(labels), *TINY])
    assert code == 0
    mask, heatmap, regions = read(out), read(heat), read(labels)
    assert mask.shape == heatmap.shape == regions.shape == (90, 130)
    assert set(np.unique(mask)) <= {0, 255} and heatmap.max() == 255
    assert np.array_equal(mask == 255, heatmap >= 128)  # the mask is the heat map at the selection threshold
    assert regions.min() == 1  # regions are numbered from 1, as in a volume's labels.nrrd: none is black
    assert "mask:" in capsys.readouterr().out


def test_seed_and_unsupervised_modes(lesion_png, tmp_path):
    out = tmp_path / "seed.png"
    assert main(["segment", str(lesion_png), "--seed", "70,45", "--out", str(out), *TINY]) == 0
    assert read(out).shape == (90, 130) and read(out)[45, 70] == 255
    labels = tmp_path / "all.png"
    assert main(["segment", str(lesion_png), "--mode", "unsupervised", "--out", str(labels), *TINY]) == 0
    assert read(labels).shape == (90, 130)


@pytest.mark.parametrize("arguments, message", [
    (["missing.png", "--prompt", "x", "--out", "m.png"], "no such file"),
    (["not_an_image.png", "--prompt", "x", "--out", "m.png"], "is not an image"),
    (["IMAGE", "--prompt", "  ", "--out", "m.png", "--mode", "prompt"], "prompt mode needs a non-empty --prompt"),
    (["IMAGE", "--seed", "500,3", "--out", "m.png"], r"seed \(500,3\) is outside the image \(130x90"),
    (["IMAGE", "--out", "m.png"], "nothing to select"),
    (["IMAGE", "--prompt", "x"], "give --out"),
    (["IMAGE", "--prompt", "x", "--out", "m.png", "--model", "nobody/nothing"], "not in the Hugging Face cache"),
    (["IMAGE", "--prompt", "x", "--out", "no/such/dir/m.png"], "output folder does not exist"),
    (["IMAGE", "--prompt", "x", "--out", "m.png", "--kl-threshold", "-1"], r"KL threshold \(kl_threshold, --kl-threshold\) must be in \(0, 100\], got -1"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(arguments, message, lesion_png, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not_an_image.png").write_text("hello")
    arguments = [str(lesion_png) if a == "IMAGE" else a for a in arguments]
    defaults = [] if "--model" in arguments else TINY
    code = main(["segment", *arguments, *defaults])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert error[-1].startswith("zsdseg: error: ") and re.search(message, error[-1])
    assert "Traceback" not in "\n".join(error) and not (tmp_path / "m.png").exists()


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "ZeroShotDiffusionSegLib.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "segment" in result.stdout and "serve" in result.stdout
