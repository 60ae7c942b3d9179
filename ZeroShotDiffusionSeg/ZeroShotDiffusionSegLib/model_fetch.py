"""``zsdseg fetch-model``: make a model folder on a connected machine for a machine without the hub.

The download is huggingface_hub's own ``snapshot_download`` with the files the loader reads
(``backbone.HUB_ALLOW_PATTERNS``: configs, tokenizer and the three safetensors weights; no pickle,
no safety checker, no fp16 duplicates) into a plain folder (``local_dir``). The folder is then
loaded exactly as ``--model FOLDER`` will load it on the offline machine, and the weights' sha256
are printed so the copy can be compared there (``zsdseg fetch-model --check FOLDER``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, Optional

from .engine.backbone import DEFAULT_MODEL, HUB_ALLOW_PATTERNS
from .errors import ModelLoadError, UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                        help="hub id to download (default: %(default)s); with --check, the folder to check")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="folder to download into (default: the id's name, e.g. ./stable-diffusion-v1-4); "
                             "an interrupted download into the same folder resumes")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of the hub repository (default: main)")
    parser.add_argument("--check", action="store_true",
                        help="download nothing: check that MODEL, a folder, loads as --model FOLDER would, and print its checksums")


def default_out_dir(model: str) -> Path:
    return Path(model.rstrip("/").split("/")[-1])


def hub_download(model: str, out_dir: Path, revision: Optional[str] = None) -> Path:
    """The hub repository's engine files in ``out_dir`` (huggingface_hub's ``snapshot_download``)."""
    from huggingface_hub import constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError("the Hugging Face hub is disabled here (HF_HUB_OFFLINE=1): run zsdseg fetch-model on a "
                             "machine that reaches huggingface.co, with HF_HUB_OFFLINE unset")
    try:
        return Path(snapshot_download(repo_id=model, revision=revision, allow_patterns=HUB_ALLOW_PATTERNS, local_dir=str(out_dir)))
    except Exception as error:  # noqa: BLE001 - the hub's errors (network, 401/403/404, disk) in one line
        text = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelLoadError(f"could not download model '{model}' from the Hugging Face hub ({type(error).__name__}: {text[:160]}). "
                             "Check the id and the connection; a gated model needs its licence accepted on huggingface.co "
                             "and a token (hf auth login, or HF_TOKEN)") from None


def check_model_folder(folder: Path) -> Dict[str, str]:
    """The folder loaded exactly as ``--model FOLDER`` loads it (on the CPU, fp32); its weights' sha256 by component."""
    from .engine.backbone import load_backbone

    backbone = load_backbone(str(folder), device="cpu", dtype="fp32")
    return {"resolution": str(backbone.resolution), **backbone.weight_checksums()}


def run(args) -> int:
    model = args.model.strip()
    if args.check:
        if args.out_dir is not None or args.revision is not None:
            raise UserError("--check reads a folder that is already there: drop --out-dir and --revision")
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise UserError(f"--check takes a model folder; {model} is not a folder")
    else:
        if model.count("/") != 1 or Path(model).expanduser().exists():
            raise UserError(f"fetch-model downloads a hub id such as {DEFAULT_MODEL}; to check a folder, add --check")
        folder = (args.out_dir or default_out_dir(model)).expanduser()
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--out-dir {folder} exists and is not a folder")
        print(f"downloading {model} (configs, tokenizer, safetensors weights) into {folder.absolute()}", flush=True)
        folder = hub_download(model, folder, args.revision)
    checks = check_model_folder(folder)
    print(f"{folder.absolute()} loads as a {checks.pop('resolution')} px model; weight sha256:")
    for component, digest in checks.items():
        print(f"  {component}: {digest}")
    print(f"offline: copy the whole folder, check the copy with 'zsdseg fetch-model --check FOLDER' (same checksums), "
          f"and pass --model FOLDER (Slicer: Advanced > Model > Folder...)")
    return 0
