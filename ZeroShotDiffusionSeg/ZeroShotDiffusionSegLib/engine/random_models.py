"""Random-weight backbones for tests and benchmarks: ``random:tiny`` (seconds on a CPU) and the exact
published SD 1.5 / SD 2.1-base architectures. Configs are data (``configs/<name>/*.json``); the CLIP
tokenizer ships with the package so that a fresh clone works offline.

Random weights exercise every code path; the segmentations they give mean nothing.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TOKENIZER_DIR = CONFIG_DIR / "tokenizer"
RANDOM_PREFIX = "random:"
RANDOM_MODELS = ("tiny", "sd15", "sd21base")
# SD 2.x's OpenCLIP tokenizer pads with "!" (id 0) instead of the end-of-text token.
_PAD_TOKEN = {"sd21base": "!"}
_INIT_SEED = 0

MEANINGLESS_WARNING = (
    "\n" + "!" * 78 + "\n"
    "!! WARNING: model '{model}' has RANDOM weights. Its segmentations are MEANINGLESS.\n"
    "!! Use it for tests and speed benchmarks only; pass real weights with --model.\n" + "!" * 78 + "\n"
)


def is_random_model(model: str) -> bool:
    return model.startswith(RANDOM_PREFIX)


def _read_config(name: str, part: str) -> dict:
    with open(CONFIG_DIR / name / f"{part}.json", encoding="utf-8") as handle:
        return {key: value for key, value in json.load(handle).items() if not key.startswith("_comment")}


def config_digest(name: str) -> str:
    """sha256 over the configs that, with the fixed seed, fully determine a random model's weights."""
    digest = hashlib.sha256()
    for part in ("unet", "vae", "text_encoder", "scheduler"):
        digest.update((CONFIG_DIR / name / f"{part}.json").read_bytes())
    return digest.hexdigest()


def load_tokenizer(name: str):
    from transformers import CLIPTokenizer

    pad = _PAD_TOKEN.get(name)
    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR, **({"pad_token": pad} if pad else {}))


def build_random_components(model: str) -> dict:
    """The five components of a diffusers SD checkpoint, with deterministic random weights."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    name = model[len(RANDOM_PREFIX):]
    if name not in RANDOM_MODELS:
        known = ", ".join(RANDOM_PREFIX + n for n in RANDOM_MODELS)
        raise KeyError(f"unknown random model '{model}' (known: {known})")
    sys.stderr.write(MEANINGLESS_WARNING.format(model=model))
    # The caller's global RNG is left untouched; the same name always gives the same weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_INIT_SEED)
        unet = UNet2DConditionModel.from_config(_read_config(name, "unet"))
        vae = AutoencoderKL.from_config(_read_config(name, "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(_read_config(name, "text_encoder")))
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": load_tokenizer(name),
        "scheduler": DDPMScheduler.from_config(_read_config(name, "scheduler")),
    }
