"""Pseudo-healthy counterfactual: latent blending, pasting, seeding (random:tiny), and the residual
refinement rule with stand-in inpainters whose answer is known. Mechanics only: random weights say
nothing about how healthy the repainted tissue looks."""

import threading

import numpy as np
import pytest
import torch

from ZeroShotDiffusionSegLib.engine.healthy_params import PseudoHealthyParams, noise_seed_for, prompts_for
from ZeroShotDiffusionSegLib.engine.residuals import dilate_mm, refine_batch
from ZeroShotDiffusionSegLib.errors import Cancelled, UserError

FAST = PseudoHealthyParams(steps=6, strength=0.5, guidance=3.0, seed=7)  # 3 denoising steps


@pytest.fixture(scope="module")
def inpainter(tiny_backbone):
    from ZeroShotDiffusionSegLib.engine.pseudo_healthy import PseudoHealthyInpainter

    return PseudoHealthyInpainter(tiny_backbone)


def textured(shape, seed=0):
    return np.random.default_rng(seed).uniform(0.35, 0.45, size=shape).astype(np.float32)


def disc(shape, centre, radius):
    rows, columns = np.indices(shape)
    return np.hypot(rows - centre[0], columns - centre[1]) <= radius


def dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_outside_the_region_every_step_latent_is_the_original_noised_with_the_same_noise(inpainter, tiny_backbone):
    from diffusers.utils.torch_utils import randn_tensor

    images = [textured((96, 128), 1), textured((128, 80), 2)]
    regions = [disc((96, 128), (40, 60), 12), disc((128, 80), (90, 30), 9)]
    keys = [3, 11]
    steps = []
    inpainter.repaint(images, regions, keys, "healthy liver", "liver tumor", FAST,
                      on_step=lambda step, latents: steps.append(latents.clone()))
    assert len(steps) == FAST.denoising_steps == 3

    fits, pixels = inpainter._to_model(images)
    with torch.inference_mode():
        clean = tiny_backbone.vae.encode(pixels).latent_dist.mean * tiny_backbone.vae.config.scaling_factor
    noise = randn_tensor(clean.shape, generator=[torch.Generator("cpu").manual_seed(noise_seed_for(7, k)) for k in keys])
    timesteps = inpainter.pipeline.scheduler.timesteps[-len(steps):]
    latent_side = clean.shape[-1]
    repainted = torch.stack([
        torch.nn.functional.interpolate(inpainter.latent_region(fit, region)[None], size=latent_side)[0, 0]
        for fit, region in zip(fits, regions)]).bool()
    assert 0 < repainted.float().mean() < 0.2
    for step, latents in enumerate(steps):
        last = step == len(steps) - 1
        expected = clean if last else inpainter.pipeline.scheduler.add_noise(clean, noise, timesteps[step + 1:step + 2])
        for image in range(len(images)):
            outside = ~repainted[image]
            assert torch.equal(latents[image][:, outside], expected[image][:, outside])  # exactly, bit for bit
            assert not torch.allclose(latents[image][:, ~outside], expected[image][:, ~outside])  # the model repaints


def test_latent_region_covers_every_vae_block_the_region_touches(inpainter):
    from ZeroShotDiffusionSegLib.engine.preprocess import SquareFit

    fit = SquareFit(512, 512, 512)
    region = np.zeros((512, 512), dtype=bool)
    region[9, 17] = True  # one pixel: block (1, 2) of the 8x8 VAE blocks
    mask = inpainter.latent_region(fit, region)[0]
    assert mask.sum() == 64 and mask[8:16, 16:24].all()


def test_healthy_image_equals_the_input_outside_the_region_and_the_seed_fixes_it(inpainter):
    images = [textured((96, 128), 3)]
    regions = [disc((96, 128), (50, 70), 15)]
    first = inpainter.repaint(images, regions, [5], "healthy liver", "", FAST)[0]
    again = inpainter.repaint(images, regions, [5], "healthy liver", "", FAST)[0]
    other_params = PseudoHealthyParams(**{**FAST.to_dict(), "seed": 8})
    other_seed = inpainter.repaint(images, regions, [5], "healthy liver", "", other_params)[0]
    other_key = inpainter.repaint(images, regions, [6], "healthy liver", "", FAST)[0]
    assert first.shape == images[0].shape and first.dtype == np.float32 and 0 <= first.min() and first.max() <= 1
    np.testing.assert_array_equal(first[~regions[0]], images[0][~regions[0]])  # pasted: bound 0
    assert not np.allclose(first[regions[0]], images[0][regions[0]])
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other_seed) and not np.array_equal(first, other_key)


def test_rgb_images_keep_three_channels(inpainter):
    image = np.repeat(textured((64, 64), 4)[..., None], 3, axis=2)
    region = disc((64, 64), (32, 32), 10)
    healthy = inpainter.repaint([image], [region], [0], "healthy skin", "", FAST)[0]
    assert healthy.shape == (64, 64, 3)
    np.testing.assert_array_equal(healthy[~region], image[~region])


def test_cancel_stops_between_steps(inpainter):
    cancel = threading.Event()
    calls = []

    def on_step(step, latents):
        calls.append(step)
        cancel.set()

    with pytest.raises(Cancelled):
        inpainter.repaint([textured((64, 64))], [disc((64, 64), (30, 30), 8)], [0], "healthy liver", "", FAST,
                          cancel=cancel, on_step=on_step)
    assert calls == [0]


class StandInInpainter:
    """Repaints by pasting a known lesion-free image (the surrounding texture) into the region; the feature
    residual is the real VAE-encoder one of random:tiny."""

    def __init__(self, real, clean):
        self.real, self.clean = real, clean

    def repaint(self, images, regions, keys, normal_prompt, negative_prompt, params, cancel=None, on_step=None):
        return [np.where(region, self.clean, image).astype(np.float32) for image, region in zip(images, regions)]

    def feature_distance(self, images, healthy):
        return self.real.feature_distance(images, healthy)


def lesion_case():
    shape, centre, radius = (128, 128), (60, 70), 16
    clean = textured(shape, 5)
    lesion = disc(shape, centre, radius)
    image = np.where(lesion, 0.8, clean).astype(np.float32)
    return image, clean, lesion, centre, radius


@pytest.mark.parametrize("rough", ["box grown 30%", "shifted by a quarter"])
def test_refinement_recovers_the_lesion_from_a_rough_candidate(inpainter, rough):
    image, clean, lesion, (row, column), radius = lesion_case()
    candidate = np.zeros_like(lesion)
    if rough == "box grown 30%":
        half = int(round(radius * 1.3))
        candidate[row - half:row + half + 1, column - half:column + half + 1] = True
    else:
        shift = (2 * radius + 1) // 4
        candidate = disc(lesion.shape, (row + shift, column + shift), radius)
    params = PseudoHealthyParams(dilation_mm=10.0)
    result = refine_batch(StandInInpainter(inpainter, clean), [image], [candidate], [0], params, "healthy liver")[0]
    assert dice(candidate, lesion) < 0.8
    assert dice(result.mask, lesion) >= 0.9
    assert result.residual.dtype == np.float32 and 0 <= result.residual.min() and result.residual.max() <= 1
    assert not result.residual[~result.region].any()


def test_a_counterfactual_that_changes_nothing_gives_an_empty_mask(inpainter):
    image, _clean, lesion, _centre, _radius = lesion_case()
    unchanged = StandInInpainter(inpainter, image)
    result = refine_batch(unchanged, [image], [lesion], [0], PseudoHealthyParams(), "healthy liver")[0]
    assert not result.mask.any() and not result.residual.any()


def test_refine_batch_with_the_real_inpainter_is_reproducible(inpainter):
    image, _clean, lesion, _centre, _radius = lesion_case()
    first = refine_batch(inpainter, [image], [lesion], [4], FAST, "healthy liver", "liver tumor")[0]
    again = refine_batch(inpainter, [image], [lesion], [4], FAST, "healthy liver", "liver tumor")[0]
    for name in ("region", "healthy", "residual", "mask"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert first.region.sum() > lesion.sum()


def test_dilation_is_physical_with_anisotropic_spacing():
    mask = np.zeros((9, 9), dtype=bool)
    mask[4, 4] = True
    grown = dilate_mm(mask, 2.0, spacing=(2.0, 1.0))  # rows 2 mm apart, columns 1 mm
    assert grown[3:6, 4].all() and not grown[2, 4]
    assert grown[4, 2:7].all() and not grown[4, 1]
    np.testing.assert_array_equal(dilate_mm(mask, 0.0), mask)


def test_parameters_are_validated_and_the_default_normal_prompt_names_the_organ():
    with pytest.raises(UserError, match="--healthy-strength"):
        PseudoHealthyParams(strength=0.0)
    with pytest.raises(UserError, match="no denoising step"):
        PseudoHealthyParams(steps=2, strength=0.4)
    assert PseudoHealthyParams().denoising_steps == 10
    assert prompts_for("liver tumor", PseudoHealthyParams()) == ("healthy liver", "liver tumor")
    assert prompts_for("lung nodule", PseudoHealthyParams())[0] == "healthy lung"
    assert prompts_for("tumor", PseudoHealthyParams())[0] == "healthy tissue"
    assert prompts_for("liver tumor", PseudoHealthyParams(normal_prompt="normal liver parenchyma"))[0] == "normal liver parenchyma"
    # a volume request's --normal-prompt reaches the repaint too; "none" (anomaly contrast off) keeps the rule's
    assert prompts_for("liver tumor", PseudoHealthyParams(), "fatty liver")[0] == "fatty liver"
    assert prompts_for("liver tumor", PseudoHealthyParams(), "none")[0] == "healthy liver"
    assert noise_seed_for(0, 5) == noise_seed_for(0, 5) != noise_seed_for(0, 6)


def test_transformers_advice_to_install_torchvision_is_not_shown_and_other_warnings_are(inpainter):
    """Importing the inpainting pipeline made transformers advise installing torchvision on every run; following
    the advice replaces a CPU torch build. Only that advice is dropped."""
    import logging

    from ZeroShotDiffusionSegLib.engine.pseudo_healthy import PseudoHealthyInpainter

    logger = logging.getLogger("transformers.utils.import_utils")
    filters = [f for f in logger.filters if type(f).__name__ == "_NoTorchvisionAdvice"]
    PseudoHealthyInpainter(inpainter.backbone)  # a second inpainter adds no second filter
    assert len(filters) == 1 and filters == [f for f in logger.filters if type(f).__name__ == "_NoTorchvisionAdvice"]
    advice = logging.LogRecord(logger.name, logging.WARNING, __file__, 1, "`CLIPImageProcessor` requires torchvision "
                               "(not installed); falling back to `CLIPImageProcessorPil`", None, None)
    other = logging.LogRecord(logger.name, logging.WARNING, __file__, 1, "some other warning", None, None)
    assert not filters[0].filter(advice) and filters[0].filter(other)
