"""Pseudo-healthy counterfactual: repaint a region of each image with the loaded SD backbone, guided
toward a normal-tissue prompt, keeping everything outside the region (DiffuGTS's second stage,
training-free; docs/algorithms.md#pseudo-healthy-refinement).

The loop is diffusers' ``StableDiffusionInpaintPipeline`` run on the backbone's own modules (no
copy of any weight) with a 4-channel UNet, which is exactly RePaint-style blending: the clean
latent z0 (VAE posterior mean, as the segmenter uses) is noised to the strength's timestep with
seeded noise; after every DDIM step the latent outside the region is replaced by z0 noised to the
next timestep with the same noise (z0 itself after the last step). The latent region is the pixel
region max-pooled over the VAE's 8x8 blocks, so every latent that sees a region pixel is repainted.

After decoding, the image outside the region is the input itself, pasted back (so it equals the
input exactly there; the raw decode would differ by the VAE's reconstruction error and, because
the decoder's group norms and attention are global, a little everywhere).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..progress import check_cancel
from .backbone import Backbone
from .healthy_params import PseudoHealthyParams, noise_seed_for
from .preprocess import SquareFit

# Feature residual layer: the output of the VAE encoder's second down block (1/4 of the model
# resolution, 256 channels for SD 1.x/2.x): local texture, finer than the 1/8 latent.
FEATURE_DOWN_BLOCKS = 2


class _NoTorchvisionAdvice(logging.Filter):
    """Importing diffusers' pipelines makes transformers advise installing torchvision for image processors this
    pipeline does not use (feature_extractor=None); following it would replace a CPU torch build with PyPI's."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


NO_TORCHVISION_ADVICE = _NoTorchvisionAdvice()  # one instance: addFilter adds it once however many inpainters


class PseudoHealthyInpainter:
    """Repaints regions of [0, 1] images with a loaded backbone; stays warm across calls."""

    def __init__(self, backbone: Backbone):
        logging.getLogger("transformers.utils.import_utils").addFilter(NO_TORCHVISION_ADVICE)
        from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline

        self.backbone = backbone
        self.device = backbone.device
        # DDIM (eta 0) is deterministic, so the seeded starting noise is the only randomness.
        self.pipeline = StableDiffusionInpaintPipeline(
            vae=backbone.vae, text_encoder=backbone.text_encoder, tokenizer=backbone.tokenizer, unet=backbone.unet,
            scheduler=DDIMScheduler.from_config(backbone.scheduler.config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        self.pipeline.set_progress_bar_config(disable=True)
        self.vae_scale = 2 ** (len(backbone.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        return self.backbone.resolution

    def _to_model(self, images: Sequence[np.ndarray]):
        fits = [SquareFit(int(image.shape[0]), int(image.shape[1]), self.resolution) for image in images]
        pixels = torch.stack([fit.to_model(image) for fit, image in zip(fits, images)])
        return fits, pixels.to(self.device, self.backbone.dtype)

    def latent_region(self, fit: SquareFit, region: np.ndarray) -> torch.Tensor:
        """(1, size, size) 0/1 mask at model resolution, constant on every VAE block: 1 where any image pixel
        under the block lies in ``region`` (the image-size bool mask), so the region is repainted whole."""
        square = torch.zeros((fit.side, fit.side))
        square[fit.pad_top:fit.pad_top + fit.height, fit.pad_left:fit.pad_left + fit.width] = torch.from_numpy(
            np.asarray(region, dtype=np.float32))
        blocks = F.adaptive_max_pool2d(square[None, None], self.resolution // self.vae_scale)
        return F.interpolate(blocks, scale_factor=self.vae_scale, mode="nearest")[0]

    def repaint(
        self,
        images: Sequence[np.ndarray],
        regions: Sequence[np.ndarray],
        keys: Sequence[int],
        normal_prompt: str,
        negative_prompt: str,
        params: PseudoHealthyParams,
        cancel: Optional[threading.Event] = None,
        on_step: Optional[Callable[[int, torch.Tensor], None]] = None,
    ) -> List[np.ndarray]:
        """One batch: the pseudo-healthy version of every image, at its size and layout, in [0, 1].

        ``regions``: image-size bool masks to repaint; ``keys``: one integer per image (e.g. the slice
        index) that, with ``params.seed``, fixes its noise. ``on_step(step, latents)`` after every step.
        """
        fits, pixels = self._to_model(images)
        masks = torch.stack([self.latent_region(fit, region) for fit, region in zip(fits, regions)])
        with torch.inference_mode():
            latents = self.backbone.vae.encode(pixels).latent_dist.mean * self.backbone.vae.config.scaling_factor
        generators = [torch.Generator("cpu").manual_seed(noise_seed_for(params.seed, key)) for key in keys]

        def each_step(pipeline, step, timestep, tensors):
            if on_step is not None:
                on_step(step, tensors["latents"])
            check_cancel(cancel)
            return {}

        count = len(images)
        size = self.resolution
        with torch.inference_mode():
            decoded = self.pipeline(
                prompt=[normal_prompt] * count, negative_prompt=[negative_prompt] * count,
                image=latents, masked_image_latents=latents,  # 4 channels: taken as latents, not encoded again
                mask_image=masks.float().cpu(), height=size, width=size, strength=params.strength,
                num_inference_steps=params.steps, guidance_scale=params.guidance, generator=generators,
                output_type="pt", callback_on_step_end=each_step,
            ).images
        return [self._paste(fit, image, region, model_image)
                for fit, image, region, model_image in zip(fits, images, regions, decoded.float().cpu())]

    @staticmethod
    def _paste(fit: SquareFit, image: np.ndarray, region: np.ndarray, model_image: torch.Tensor) -> np.ndarray:
        """The decoded image back at the input's size inside ``region``, the input itself outside it."""
        channels = [fit.map_to_image(channel) for channel in model_image]
        if image.ndim == 2:
            painted = np.mean(channels, axis=0)
        else:
            painted = np.stack(channels[: image.shape[2]], axis=-1)
            region = region[..., None]
        return np.where(region, np.clip(painted, 0.0, 1.0), image).astype(np.float32)

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        encoder = self.backbone.vae.encoder
        hidden = encoder.conv_in(pixels)
        for block in encoder.down_blocks[:FEATURE_DOWN_BLOCKS]:
            hidden = block(hidden)
        return hidden

    def feature_distance(self, images: Sequence[np.ndarray], healthy: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Per pixel, 1 - cosine similarity of the VAE encoder features (``FEATURE_DOWN_BLOCKS``) of the
        input and its pseudo-healthy version, upsampled bilinearly to the image size, clipped to [0, 1]."""
        fits, original = self._to_model(images)
        _, repainted = self._to_model(healthy)
        with torch.inference_mode():
            similarity = F.cosine_similarity(self._features(original).float(), self._features(repainted).float(), dim=1)
            distance = (1.0 - similarity).clamp(0.0, 1.0)
            distance = F.interpolate(distance[:, None], size=(self.resolution, self.resolution), mode="bilinear",
                                     align_corners=False)[:, 0].cpu()
        return [fit.map_to_image(map_) for fit, map_ in zip(fits, distance)]


def inpainter_for(segmenter):
    """The segmenter's own inpainter when it offers one (test stand-ins), else one on its loaded backbone."""
    make = getattr(segmenter, "pseudo_healthy_inpainter", None)
    return make() if make is not None else PseudoHealthyInpainter(segmenter.backbone)
