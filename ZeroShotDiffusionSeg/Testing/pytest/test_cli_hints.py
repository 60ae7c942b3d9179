"""Refusals that tell the user what to give instead name only what applies to their input."""

import numpy as np
import pytest
from PIL import Image

from ZeroShotDiffusionSegLib.cli import main


@pytest.fixture
def png(tmp_path):
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(tmp_path / "img.png")
    return tmp_path / "img.png"


@pytest.mark.parametrize("extra, hint", [
    (["--prompt", "tumor", "--out-dir", "o"], "img.png is a 2-D image (give --out mask.png)"),
    (["--seed-ras", "1,2,3", "--out", "m.png"], "img.png is a 2-D image (give --seed X,Y in pixels)"),
    (["--seed-lps", "1,2,3", "--out-dir", "o"], "img.png is a 2-D image (give --seed X,Y in pixels and --out mask.png)"),
    (["--prompt", "tumor", "--out", "m.png", "--window", "lung"], "--window is for 3-D volumes; img.png is a 2-D image\n"),
])
def test_a_2d_image_with_volume_options_suggests_only_their_2d_counterparts(png, capsys, extra, hint):
    assert main(["segment", str(png), *extra, "--model", "random:tiny"]) == 2
    err = capsys.readouterr().err
    assert hint in err and err.count("\n") == 1
