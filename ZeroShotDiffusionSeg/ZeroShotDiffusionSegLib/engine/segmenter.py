"""The 2-D engine: images in, unsupervised partition + prompt/seed selection out, one UNet pass per batch."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import UserError
from ..progress import check_active_cancel
from .attention import AttentionStore, capture_attention
from .backbone import Backbone
from .merging import segment_self_attention
from .preprocess import SquareFit
from .selection import prompt_attention_map, segment_scores, select_by_prompt, select_by_seeds
from .types import ImageResult, PixelSeed, SegmentationParams


class DiffusionSegmenter:
    """Wraps a loaded ``Backbone``; the model stays warm across calls, parameters come per call."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.model_id = backbone.model_id
        self.device = backbone.device
        self.last_timings: Dict[str, float] = {}
        self._prompt_cache: Dict[str, tuple] = {}

    @property
    def model_resolution(self) -> int:
        return self.backbone.resolution

    @contextmanager
    def _timed(self, stage: str):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.last_timings[stage] = self.last_timings.get(stage, 0.0) + time.perf_counter() - start

    def encode_prompt(self, prompt: str):
        """(embedding (1, 77, D), content token positions). BOS, EOS and padding are not content;
        surrounding whitespace is dropped, and None means the empty prompt."""
        prompt = (prompt or "").strip()
        if prompt not in self._prompt_cache:
            tokenizer = self.backbone.tokenizer
            content_ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length)["input_ids"]
            content_positions = list(range(1, len(content_ids) - 1))
            padded = tokenizer(prompt, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                               return_tensors="pt").input_ids.to(self.device)
            with torch.inference_mode():
                embedding = self.backbone.text_encoder(padded)[0]
            self._prompt_cache[prompt] = (embedding, content_positions)
        return self._prompt_cache[prompt]

    def _latents(self, images: Sequence[np.ndarray], params: SegmentationParams):
        fits = [SquareFit(int(image.shape[0]), int(image.shape[1]), self.model_resolution) for image in images]
        with self._timed("preprocess"):
            pixels = torch.stack([fit.to_model(image) for fit, image in zip(fits, images)])
            pixels = pixels.to(self.device, self.backbone.dtype)
        with self._timed("vae"), torch.inference_mode():
            # Posterior mean, no sampling: the reference latent (algorithms.md §1.1).
            latents = self.backbone.vae.encode(pixels).latent_dist.mean * self.backbone.vae.config.scaling_factor
        timestep = torch.tensor([params.timestep], device=self.device)
        if params.noise_seed is not None:
            generator = torch.Generator("cpu").manual_seed(params.noise_seed)
            noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
            latents = self.backbone.scheduler.add_noise(latents, noise, timestep)
        return fits, latents, timestep

    def _unet(self, latents, timestep, embedding):
        return self.backbone.unet(latents, timestep, encoder_hidden_states=embedding.expand(len(latents), -1, -1)).sample

    def segment_batch(
        self,
        images: Sequence[np.ndarray],
        prompt: Optional[str] = None,
        seeds: Optional[Sequence[Sequence[PixelSeed]]] = None,
        params: SegmentationParams = SegmentationParams(),
    ) -> List[ImageResult]:
        """Segment several images in one VAE and one UNet pass.

        ``images``: float arrays in [0, 1], (H, W) or (H, W, 3), sizes may differ. With a prompt the pass is
        conditioned on it and the prompt rule selects segments; with seeds (one list per image) the seeds'
        segments are selected; with neither only the partition is returned. Without a prompt the context is
        the empty prompt, as in DiffSeg.
        """
        if len(images) == 0:
            raise UserError("no images to segment")
        if seeds is not None and len(seeds) != len(images):
            raise UserError(f"{len(seeds)} seed lists for {len(images)} images")
        if prompt is not None and not prompt.strip():
            raise UserError("the prompt is empty: type what to segment, e.g. \"liver tumor\"")
        self.last_timings = {}
        with self._timed("text"):
            embedding, content_positions = self.encode_prompt(prompt)
        fits, latents, timestep = self._latents(images, params)
        store = AttentionStore(content_positions if prompt else None)
        with self._timed("unet"), capture_attention(self.backbone.unet, store), torch.inference_mode():
            self._unet(latents, timestep, embedding)
        self_attention = store.self_attention()
        if params.grid_points > max(self_attention):
            raise UserError(f"grid points (grid_points, --grid-points) {params.grid_points} is more than this model's finest attention "
                            f"grid of {max(self_attention)}; use at most {max(self_attention)}")
        cross_attention = store.cross_attention() if prompt else {}
        results = []
        for index, fit in enumerate(fits):
            check_active_cancel()  # a cancel stops within one image's merging
            with self._timed("merging"):
                labels = segment_self_attention(
                    {side: maps[index:index + 1] for side, maps in self_attention.items()},
                    kl_threshold=params.kl_threshold, grid_points=params.grid_points,
                    iterations=params.iterations, refine=params.refine, output_size=fit.size)
            with self._timed("selection"):
                results.append(self._select(fit, labels, cross_attention, index, prompt,
                                            seeds[index] if seeds is not None else None, params))
        for result in results:
            result.timings = dict(self.last_timings)
        return results

    def _select(self, fit, labels, cross_attention, index, prompt, seeds, params) -> ImageResult:
        image_labels = fit.labels_to_image(labels)
        result = ImageResult(labels=image_labels)
        if prompt:
            prompt_map = prompt_attention_map({s: m[index] for s, m in cross_attention.items()}, fit.size)
            scores = segment_scores(labels, prompt_map, fit.valid_model_pixels().to(labels.device)).numpy()
            result.prompt_map = fit.map_to_image(prompt_map)
            result.score_map, result.soft, result.mask = select_by_prompt(image_labels, scores, params.selection_threshold)
        if seeds:
            result.mask = select_by_seeds(image_labels, seeds)
            result.soft = result.mask.astype(np.float32)
        return result

    def time_bare_passes(self, images: Sequence[np.ndarray], prompt: Optional[str] = None,
                         params: SegmentationParams = SegmentationParams()) -> Dict[str, float]:
        """Seconds of the same VAE and UNet passes with the stock attention processors and no capture:
        the yardstick for the engine's overhead, measured in the same run."""
        self.last_timings = {}
        embedding, _ = self.encode_prompt(prompt)
        _, latents, timestep = self._latents(images, params)
        with self._timed("unet"), torch.inference_mode():
            self._unet(latents, timestep, embedding)
        return {"vae": self.last_timings["vae"], "unet": self.last_timings["unet"]}

    def provenance(self) -> dict:
        import diffusers
        import transformers

        return {
            "model_id": self.model_id,
            "random_weights": self.backbone.is_random,
            "weight_sha256": self.backbone.weight_checksums(),
            "device": str(self.device),
            "dtype": str(self.backbone.dtype).replace("torch.", ""),
            "resolution": self.model_resolution,
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__},
        }
