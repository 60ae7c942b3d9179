"""Loading the frozen backbone (VAE, UNet, tokenizer, text encoder, scheduler) of any diffusers
SD 1.x / 2.x checkpoint, from a hub id or a local folder, safetensors only."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch

from ..errors import ModelLoadError, UserError
from .random_models import build_random_components, config_digest, is_random_model

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder")
# Only what the engine needs: no safety checker, no pickle .bin/.ckpt, no fp16 duplicates.
HUB_ALLOW_PATTERNS = [
    "model_index.json", "*/config.json", "scheduler/*.json", "tokenizer/*",
    "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
]
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


@dataclass
class Backbone:
    model_id: str
    unet: object
    vae: object
    text_encoder: object
    tokenizer: object
    scheduler: object
    device: torch.device
    dtype: torch.dtype
    is_random: bool
    weight_files: Dict[str, Path] = field(default_factory=dict)

    @property
    def resolution(self) -> int:
        """Pixel resolution the UNet was trained at: latent size x the VAE's downsampling."""
        vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return int(self.unet.config.sample_size) * vae_scale

    def weight_checksums(self) -> Dict[str, str]:
        if self.is_random:
            return {"random-config-sha256": config_digest(self.model_id.split(":", 1)[1]), "init-seed": "0"}
        return {name: file_sha256(path) for name, path in sorted(self.weight_files.items())}


def resolve_device(device: Optional[str]) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device '{device}' (use cpu, cuda, cuda:N or auto)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' was asked for, but torch {torch.__version__} sees no CUDA GPU; use --device cpu")
    return resolved


def resolve_dtype(dtype: Optional[str], device: torch.device) -> torch.dtype:
    if dtype in (None, "", "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype '{dtype}' (use fp32, fp16 or bf16)")
    if _DTYPES[dtype] is torch.float16 and device.type == "cpu":
        # diffusers warns and many CPU kernels lack fp16: refuse plainly instead of a warning and a slow run.
        raise UserError(f"--dtype {dtype} needs a GPU; on the CPU use fp32 (the default there) or bf16")
    return _DTYPES[dtype]


def file_sha256(path: Path) -> str:
    """sha256 of a weight file, cached by (path, size, mtime): hashing 3.4 GB on every run would cost seconds."""
    path = Path(path).resolve()
    stat = path.stat()
    cache_file = Path(os.environ.get("ZSDSEG_CACHE", Path.home() / ".cache" / "zsdseg")) / "checksums.json"
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        cache[key] = digest.hexdigest()
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps(cache), encoding="utf-8")
        except OSError:
            pass  # a read-only home only costs the re-hash next time
    return cache[key]


def _first_line(error: Exception) -> str:
    """The first line of an error's message (library errors run to pages), or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _hub_folder(model: str) -> Path:
    from huggingface_hub import constants, snapshot_download

    offline = constants.HF_HUB_OFFLINE
    try:
        return Path(snapshot_download(model, allow_patterns=HUB_ALLOW_PATTERNS, local_files_only=True))
    except Exception as cached_error:  # not (fully) cached yet
        if offline:
            raise ModelLoadError(
                f"model '{model}' is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub is "
                f"disabled (HF_HUB_OFFLINE=1). Pass a local diffusers folder with --model /path/to/folder (make one on "
                f"a connected machine: zsdseg fetch-model {model} --out-dir FOLDER, then copy it), "
                f"or go online once to download it") from cached_error
    try:
        return Path(snapshot_download(model, allow_patterns=HUB_ALLOW_PATTERNS))
    except Exception as error:
        raise ModelLoadError(
            f"could not download model '{model}' from the Hugging Face hub ({type(error).__name__}: {_first_line(error)[:160]}). "
            f"Looked in the cache ({constants.HF_HUB_CACHE}) and online. Check the id and your connection "
            f"(accept the model licence on huggingface.co if it is gated), or pass a local diffusers folder "
            f"with --model /path/to/folder (made on a connected machine by zsdseg fetch-model {model})") from None


def _weight_file(folder: Path, component: str, model: str) -> Path:
    directory = folder / component  # _load_components has checked that it is a folder
    # diffusers' default file name first; an fp16 variant only when it is all there is.
    safetensors = sorted(directory.glob("*.safetensors"), key=lambda path: (".fp16." in path.name, path.name))
    if safetensors:
        return safetensors[0]
    pickles = sorted(p.name for p in directory.glob("*") if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(
            f"model '{model}' has only pickle weights for {component} ({pickles[0]}); pickle files can run code when "
            f"loaded and are refused. Use a checkpoint with .safetensors files")
    raise ModelLoadError(f"model '{model}' has no {component} weights: expected {directory}/*.safetensors")


def resolve_model_folder(model: str) -> Path:
    """A local diffusers folder for ``model`` (a folder path or a hub id), or a ModelLoadError."""
    candidate = Path(model).expanduser()
    if candidate.exists():
        if not candidate.is_dir():
            raise ModelLoadError(f"'{model}' is a file; pass a diffusers folder (with unet/, vae/, text_encoder/, "
                                 f"tokenizer/, scheduler/) or a hub id")
        return candidate
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model:
        raise ModelLoadError(f"model folder '{model}' does not exist")
    if model.count("/") != 1:
        raise ModelLoadError(f"unknown model '{model}': pass a hub id such as {DEFAULT_MODEL}, a local diffusers "
                             f"folder, or random:tiny / random:sd15 / random:sd21base for tests")
    return _hub_folder(model)


def _load_components(folder: Path, model: str, dtype: torch.dtype) -> tuple:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    missing = [c for c in COMPONENTS if not (folder / c).is_dir()]
    if missing:
        listed = ", ".join(name + "/" for name in missing)
        raise ModelLoadError(f"'{folder}' is not a complete diffusers Stable Diffusion folder: missing {listed}")
    weight_files = {c: _weight_file(folder, c, model) for c in WEIGHT_COMPONENTS}
    variant = {c: ("fp16" if ".fp16." in weight_files[c].name else None) for c in WEIGHT_COMPONENTS}
    try:
        components = {
            "unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=True, torch_dtype=dtype, variant=variant["unet"]),
            "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae", use_safetensors=True, torch_dtype=dtype, variant=variant["vae"]),
            "text_encoder": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", use_safetensors=True, dtype=dtype, variant=variant["text_encoder"]),
            "tokenizer": CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            "scheduler": DDPMScheduler.from_pretrained(folder, subfolder="scheduler"),
        }
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"could not load model '{model}' from {folder}: {_first_line(error)[:200]}") from None
    return components, weight_files


def load_backbone(model: str = DEFAULT_MODEL, device: Optional[str] = None, dtype: Optional[str] = None) -> Backbone:
    """Load a frozen SD 1.x/2.x backbone: a hub id, a local diffusers folder, or random:tiny|sd15|sd21base.

    fp16 on CUDA and fp32 on CPU unless ``dtype`` says otherwise. Raises ModelLoadError (one line) when the
    weights are missing, the hub is unreachable, or the checkpoint is pickle-only.
    """
    model = (model or "").strip()
    if not model:
        raise ModelLoadError("no model given")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if is_random_model(model):
        try:
            components = build_random_components(model)
        except KeyError as error:
            raise ModelLoadError(error.args[0]) from None
        weight_files = {}
    else:
        components, weight_files = _load_components(resolve_model_folder(model), model, torch_dtype)
    for name in WEIGHT_COMPONENTS:
        module = components[name].to(torch_device)
        if module.dtype != torch_dtype:  # a no-op cast makes diffusers warn about fp32-only modules
            module = module.to(torch_dtype)
        components[name] = module.eval().requires_grad_(False)
    return Backbone(model_id=model, device=torch_device, dtype=torch_dtype, is_random=is_random_model(model),
                    weight_files=weight_files, **components)
