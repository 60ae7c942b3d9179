"""Pad-to-square geometry and its inverse."""

import numpy as np
import pytest
import torch

from ZeroShotDiffusionSegLib.engine.preprocess import SquareFit, as_rgb
from ZeroShotDiffusionSegLib.errors import UserError


def test_padding_is_centred_and_never_crops():
    fit = SquareFit(height=300, width=200, size=512)
    assert (fit.side, fit.pad_top, fit.pad_left) == (300, 0, 50)
    image = np.ones((300, 200), dtype=np.float32)
    model = fit.to_model(image)
    assert model.shape == (3, 512, 512) and model.min() == -1.0 and model.max() == 1.0
    columns = model[0].mean(0)
    assert columns[:80].max() == -1.0 and columns[95:415].min() == 1.0 and columns[432:].max() == -1.0
    valid = fit.valid_model_pixels()
    assert valid.shape == (512, 512) and abs(valid.float().mean().item() - 200 / 300) < 0.01


@pytest.mark.parametrize("height, width", [(300, 200), (97, 451), (512, 512), (64, 40)])
def test_labels_round_trip_to_the_input_grid(height, width):
    """Labels drawn on the input grid survive the trip to model resolution and back."""
    fit = SquareFit(height, width, 512)
    rows, cols = np.mgrid[0:height, 0:width]
    labels = (rows * 4 // height) * 4 + (cols * 4 // width)
    square = np.full((fit.side, fit.side), -1)
    square[fit.pad_top:fit.pad_top + height, fit.pad_left:fit.pad_left + width] = labels
    model = torch.nn.functional.interpolate(torch.tensor(square, dtype=torch.float32)[None, None], size=(512, 512), mode="nearest-exact")[0, 0]
    back = fit.labels_to_image(model.long())
    assert back.shape == (height, width)
    assert (back == labels).mean() > 0.99
    constant = fit.map_to_image(torch.full((512, 512), 0.25))
    assert constant.shape == (height, width) and np.allclose(constant, 0.25)


def test_grayscale_rgb_and_alpha_become_three_channels():
    assert as_rgb(np.zeros((4, 5))).shape == (4, 5, 3)
    rgba = np.random.default_rng(0).random((4, 5, 4))
    assert np.array_equal(as_rgb(rgba), rgba[..., :3].astype(np.float32))
    with pytest.raises(UserError, match="NaN"):
        as_rgb(np.full((3, 3), np.nan))
    with pytest.raises(UserError, match="grayscale or RGB"):
        as_rgb(np.zeros((3, 3, 2)))
