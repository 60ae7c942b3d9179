"""What a prompt's words imply: the organ it names (which picks the CT window) and its normal counterpart.

The organ table is Resources/Presets/ct_windows.json: a preset is chosen when one of its keywords
appears as a word in the prompt (the earliest one wins), else its "default". The same match gives
the normal prompt that anomaly-aware scoring contrasts the prompt with (engine/anomaly.py):

1. ``--normal-prompt TEXT`` wins; ``--normal-prompt none`` turns the contrast off (plain prompt score).
2. A prompt that is a preset of Resources/Presets/prompts.json takes that preset's ``normal``.
3. Free text takes the ``normal_prompt`` of the organ preset its words name ("hypodense liver lesion"
   -> "healthy liver"); a prompt that names no organ is contrasted with "healthy tissue".
"""

from __future__ import annotations

import functools
import json
import re
from typing import Optional, Tuple

from .errors import UserError
from .resources import resource_path

NORMAL_PROMPT_OFF = "none"


@functools.lru_cache(maxsize=1)
def ct_window_presets() -> dict:
    with open(resource_path("Presets", "ct_windows.json"), encoding="utf-8") as handle:
        return json.load(handle)


@functools.lru_cache(maxsize=1)
def prompt_presets() -> list:
    with open(resource_path("Presets", "prompts.json"), encoding="utf-8") as handle:
        return json.load(handle)["presets"]


def organ_preset(prompt: Optional[str]) -> Tuple[str, Optional[str]]:
    """(CT window preset name, the prompt word that chose it, or None when the default was taken)."""
    presets = ct_window_presets()
    for word in re.findall(r"[a-z0-9]+", (prompt or "").lower()):
        for name, preset in presets["presets"].items():
            if word in preset["keywords"]:
                return name, word
    return presets["default"], None


def _plain(text: str) -> str:
    return " ".join(text.split())


def normal_prompt_for(prompt: str, override: Optional[str] = None) -> Optional[str]:
    """The normal counterpart of ``prompt`` by the rule above; None when the contrast is off."""
    if override is not None:
        check_normal_prompt(prompt, override)
        return None if _plain(override).lower() == NORMAL_PROMPT_OFF else _plain(override)
    text = _plain(prompt).lower()
    for preset in prompt_presets():
        if preset["prompt"].lower() == text:
            return preset["normal"]
    name, _ = organ_preset(prompt)
    return ct_window_presets()["presets"][name]["normal_prompt"]


def check_normal_prompt(prompt: Optional[str], normal_prompt: str) -> None:
    """The checks of a given normal prompt that need no model: not blank, not the prompt itself."""
    if not _plain(normal_prompt):
        raise UserError('--normal-prompt is empty: give the healthy counterpart (e.g. "healthy liver") or "none"')
    if prompt and _plain(normal_prompt).lower() == _plain(prompt).lower():
        raise UserError("--normal-prompt is the prompt itself: every pixel would score 0.5; give the healthy "
                        "counterpart (e.g. \"healthy liver\") or \"none\"")
