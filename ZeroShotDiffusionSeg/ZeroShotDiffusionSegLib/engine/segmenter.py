"""The 2-D engine: images in, unsupervised partition + prompt/seed selection out, one UNet pass per batch.

The pass is unconditional (empty prompt); prompts are applied to the states it leaves
(``prompt_maps``), so re-prompting needs no new pass."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import UserError
from ..progress import check_active_cancel
from .anomaly import anomaly_map
from .attention import AttentionStore, capture_attention
from .backbone import Backbone
from .merging import segment_self_attention
from .preprocess import SquareFit
from .prompt_maps import PROMPT_MAP_RULE, SliceState, cross_attention_layers, prompt_keys, prompt_token_maps, query_sides
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
        self._layers: Optional[Dict[str, object]] = None
        self._keys_for: Optional[tuple] = None
        self._keys: Dict[str, torch.Tensor] = {}

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
            # Posterior mean, no sampling: the reference latent (docs/algorithms.md#the-diffusion-pass).
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
        normal_prompt: Optional[str] = None,
    ) -> List[ImageResult]:
        """Segment several images in one VAE and one UNet pass: ``score_states(capture_states(images))``.

        ``images``: float arrays in [0, 1], (H, W) or (H, W, 3), sizes may differ. With a prompt the prompt
        rule selects segments (against ``normal_prompt`` when given); with seeds (one list per image) the
        seeds' segments are selected; with neither only the partition is returned.
        """
        if len(images) == 0:
            raise UserError("no images to segment")
        if seeds is not None and len(seeds) != len(images):
            raise UserError(f"{len(seeds)} seed lists for {len(images)} images")
        if prompt is not None and not prompt.strip():
            raise UserError("the prompt is empty: type what to segment, e.g. \"liver tumor\"")
        self.last_timings = {}
        states = self._capture(images, params)
        results = self._score(states, prompt, normal_prompt, params)
        for index, result in enumerate(results):
            if seeds is not None and seeds[index]:
                with self._timed("selection"):
                    result.mask = select_by_seeds(result.labels, seeds[index])
                    result.soft = result.mask.astype(np.float32)
        for result in results:
            result.timings = dict(self.last_timings)
        return results

    def capture_states(self, images: Sequence[np.ndarray], params: SegmentationParams = SegmentationParams()) -> List[SliceState]:
        """One unconditional pass over ``images``: each image's partition and cross-attention queries."""
        if len(images) == 0:
            raise UserError("no images to segment")
        self.last_timings = {}
        return self._capture(images, params)

    def score_states(self, states: Sequence[SliceState], prompt: Optional[str] = None, normal_prompt: Optional[str] = None,
                     params: SegmentationParams = SegmentationParams()) -> List[ImageResult]:
        """Results of ``prompt`` (or the bare partition without one) from states of ``capture_states``."""
        if prompt is not None and not prompt.strip():
            raise UserError("the prompt is empty: type what to segment, e.g. \"liver tumor\"")
        self.last_timings = {}
        return self._score(states, prompt, normal_prompt, params)

    def _capture(self, images, params) -> List[SliceState]:
        with self._timed("text"):
            embedding, _ = self.encode_prompt("")
        fits, latents, timestep = self._latents(images, params)
        store = AttentionStore(query_sides(latents.shape[-1]))
        with self._timed("unet"), capture_attention(self.backbone.unet, store), torch.inference_mode():
            self._unet(latents, timestep, embedding)
        self_attention = store.self_attention()
        if params.grid_points > max(self_attention):
            raise UserError(f"grid points (grid_points, --grid-points) {params.grid_points} is more than this model's finest attention "
                            f"grid of {max(self_attention)}; use at most {max(self_attention)}")
        states = []
        for index, (fit, image) in enumerate(zip(fits, images)):
            check_active_cancel()  # a cancel stops within one image's merging
            with self._timed("merging"):
                labels = segment_self_attention(
                    {side: maps[index:index + 1] for side, maps in self_attention.items()},
                    kl_threshold=params.kl_threshold, grid_points=params.grid_points,
                    iterations=params.iterations, refine=params.refine, output_size=fit.size)
            queries = {name: query[index].clone() for name, query in store.queries.items()}
            states.append(SliceState(labels.to(torch.int16), (int(image.shape[0]), int(image.shape[1])), queries))
        return states

    def _score(self, states, prompt, normal_prompt, params) -> List[ImageResult]:
        fits = [SquareFit(*state.image_shape, self.model_resolution) for state in states]
        results = [ImageResult(labels=fit.labels_to_image(state.labels.long())) for fit, state in zip(fits, states)]
        if not prompt:
            return results
        prompts = [prompt] + ([normal_prompt] if normal_prompt else [])
        with self._timed("text"), torch.inference_mode():
            encoded = [self.encode_prompt(text) for text in prompts]
            keys = self._prompt_keys(tuple(text.strip() for text in prompts), [embedding for embedding, _ in encoded])
        with self._timed("selection"), torch.inference_mode():
            maps = prompt_token_maps(states, self._cross_layers(), keys, [content for _, content in encoded])
            for index, (fit, state, result) in enumerate(zip(fits, states, results)):
                labels = state.labels.long()
                prompt_map = prompt_attention_map(maps[0][index], fit.size)
                score_source = prompt_map
                if normal_prompt:
                    score_source = anomaly_map(prompt_map, prompt_attention_map(maps[1][index], fit.size),
                                               params.anomaly_temperature)
                    result.anomaly_map = fit.map_to_image(score_source)
                scores = segment_scores(labels, score_source, fit.valid_model_pixels().to(labels.device)).numpy()
                result.prompt_map = fit.map_to_image(prompt_map)
                result.score_map, result.soft, result.mask = select_by_prompt(result.labels, scores, params.selection_threshold)
        return results

    def _prompt_keys(self, prompts: tuple, embeddings):
        """Every cross-attention layer's keys of these prompts, kept for the next batch of the same prompts."""
        if self._keys_for != prompts:
            self._keys = prompt_keys(self._cross_layers(), embeddings)
            self._keys_for = prompts
        return self._keys

    def _cross_layers(self):
        if self._layers is None:
            self._layers = cross_attention_layers(self.backbone.unet)
        return self._layers

    def time_bare_passes(self, images: Sequence[np.ndarray], params: SegmentationParams = SegmentationParams()) -> Dict[str, float]:
        """Seconds of the same (empty-prompt) VAE and UNet passes with the stock attention processors and no
        capture: the yardstick for the engine's overhead, measured in the same run."""
        self.last_timings = {}
        embedding, _ = self.encode_prompt("")
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
            "prompt_maps": PROMPT_MAP_RULE,
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__},
        }
