"""What a prompt's words imply: the organ it names, and from the organ its CT window, its normal
counterpart and its DICOM anatomic region.

The organ table is Resources/Presets/organs.json, the one place prompt words are matched: an organ is
chosen when one of its keywords appears as a word in the prompt (the earliest one wins). A prompt that
names no organ gets the table's "default" window and normal prompt, and no anatomic region. Presets of
the Slicer panel (prompts.json) are plain prompts and follow the same rule.

The normal prompt that anomaly-aware scoring (engine/anomaly.py) and the pseudo-healthy repaint contrast
the prompt with:

1. ``--normal-prompt TEXT`` wins; ``--normal-prompt none`` turns the contrast off (plain prompt score).
2. Otherwise the ``normal_prompt`` of the organ the prompt names ("hypodense liver lesion" -> "healthy
   liver"); a prompt that names no organ is contrasted with "healthy tissue".
"""

from __future__ import annotations

import functools
import json
import re
from typing import Optional, Tuple

from .errors import UserError
from .resources import resource_path

NORMAL_PROMPT_OFF = "none"
Code = Tuple[str, str, str]  # (coding scheme, code value, code meaning)


@functools.lru_cache(maxsize=1)
def organ_table() -> dict:
    with open(resource_path("Presets", "organs.json"), encoding="utf-8") as handle:
        return json.load(handle)


def named_organ(prompt: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """(organ, the prompt word that names it), or (None, None) when the prompt names no organ."""
    organs = organ_table()["organs"]
    for word in re.findall(r"[a-z0-9]+", (prompt or "").lower()):
        for name, organ in organs.items():
            if word in organ["keywords"]:
                return name, word
    return None, None


def window_presets() -> dict:
    """Name -> organ entry, for the organs that have a standard CT window (the default has one)."""
    return {name: organ for name, organ in organ_table()["organs"].items() if "width" in organ}


def window_preset_for(prompt: Optional[str]) -> Tuple[str, str]:
    """(window preset name, why it was chosen) for a prompt."""
    name, word = named_organ(prompt)
    default = organ_table()["default"]
    if name is None:
        return default, "no organ word in the prompt" if prompt else "no prompt"
    if name not in window_presets():
        return default, f"prompt word '{word}' names the {name}, which has no standard CT window"
    return name, f"prompt word '{word}'"


def anatomic_region(prompt: Optional[str]) -> Optional[Code]:
    """The DICOM anatomic region (SNOMED CT) of the organ the prompt names; None when it names none."""
    name, _ = named_organ(prompt)
    region = organ_table()["organs"][name]["region"] if name else None
    return tuple(region) if region else None  # type: ignore[return-value]


def _plain(text: str) -> str:
    return " ".join(text.split())


def normal_prompt_for(prompt: str, override: Optional[str] = None) -> Optional[str]:
    """The normal counterpart of ``prompt`` by the rule above; None when the contrast is off."""
    if override is not None:
        check_normal_prompt(prompt, override)
        return None if _plain(override).lower() == NORMAL_PROMPT_OFF else _plain(override)
    name, _ = named_organ(prompt)
    table = organ_table()
    return table["organs"][name or table["default"]]["normal_prompt"]


def check_normal_prompt(prompt: Optional[str], normal_prompt: str) -> None:
    """The checks of a given normal prompt that need no model: not blank, not the prompt itself."""
    if not _plain(normal_prompt):
        raise UserError('--normal-prompt is empty: give the healthy counterpart (e.g. "healthy liver") or "none"')
    if prompt and _plain(normal_prompt).lower() == _plain(prompt).lower():
        raise UserError("--normal-prompt is the prompt itself: every pixel would score 0.5; give the healthy "
                        "counterpart (e.g. \"healthy liver\") or \"none\"")
