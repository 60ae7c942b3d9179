"""What a prompt's words imply: the organ it is about, and from the organ its CT window, its normal
counterpart and its DICOM anatomic region.

The organ table is Resources/Presets/organs.json, the one place prompt words are matched. A word matches
an organ when it is one of the organ's keywords (words that name it) or cues (words that suggest it
without naming it, e.g. "nodule" -> lung). When several words match, the prompt's organ is chosen by,
in order: the site of a metastasis (an organ word right before "metastasis"/"metastases"/"mets"/
"metastatic", or within three words after one); a keyword before a cue; an organ with a CT window
before one without; the earliest word. So "lung cancer brain metastasis" is about the brain, "breast
cancer liver metastasis" about the liver, "breast nodule" and "breast mass" about the breast. A prompt
about no organ gets the table's "default" window and normal prompt; the anatomic region is given only
when a keyword named the organ (a wrong code is worse than none). Presets of the Slicer panel
(prompts.json) are plain prompts and follow the same rule.

The normal prompt that anomaly-aware scoring (engine/anomaly.py) and the pseudo-healthy repaint contrast
the prompt with:

1. ``--normal-prompt TEXT`` wins; ``--normal-prompt none`` turns the contrast off (plain prompt score).
2. Otherwise the ``normal_prompt`` of the prompt's organ ("hypodense liver lesion" -> "healthy liver"); a
   prompt about no organ is contrasted with "healthy tissue".
"""

from __future__ import annotations

import functools
import json
import re
from typing import Optional, Tuple

from .errors import UserError
from .resources import resource_path

NORMAL_PROMPT_OFF = "none"
METASTASIS_WORDS = ("metastasis", "metastases", "mets", "metastatic")
SITE_WORDS_AFTER = 3  # "metastases to the liver": the site comes within three words after the metastasis word
Code = Tuple[str, str, str]  # (coding scheme, code value, code meaning)


@functools.lru_cache(maxsize=1)
def organ_table() -> dict:
    with open(resource_path("Presets", "organs.json"), encoding="utf-8") as handle:
        return json.load(handle)


def prompt_organ(prompt: Optional[str]) -> Tuple[Optional[str], Optional[str], bool]:
    """(organ, the prompt word that chose it, whether that word names the organ rather than suggests it) by the
    rule above; (None, None, False) for a prompt about no organ."""
    organs = organ_table()["organs"]
    words = re.findall(r"[a-z0-9]+", (prompt or "").lower())
    metastasis_at = [index for index, word in enumerate(words) if word in METASTASIS_WORDS]
    ranked = []
    for index, word in enumerate(words):
        for name, organ in organs.items():
            if word in organ["keywords"] or word in organ.get("cues", ()):
                site = any(at - 1 == index or 0 < index - at <= SITE_WORDS_AFTER for at in metastasis_at)
                named = word in organ["keywords"]
                ranked.append(((not site, not named, "width" not in organ, index), (name, word, named)))
                break
    return min(ranked)[1] if ranked else (None, None, False)


def window_presets() -> dict:
    """Name -> organ entry, for the organs that have a standard CT window (the default has one)."""
    return {name: organ for name, organ in organ_table()["organs"].items() if "width" in organ}


def window_preset_for(prompt: Optional[str]) -> Tuple[str, str]:
    """(window preset name, why it was chosen) for a prompt."""
    name, word, _ = prompt_organ(prompt)
    default = organ_table()["default"]
    if name is None:
        return default, "no organ word in the prompt" if prompt else "no prompt"
    if name not in window_presets():
        return default, f"prompt word '{word}' names the {name}, which has no standard CT window"
    return name, f"prompt word '{word}'"


def anatomic_region(prompt: Optional[str]) -> Optional[Code]:
    """The DICOM anatomic region (SNOMED CT) of the organ a prompt word names; None when no keyword names one."""
    name, _, named = prompt_organ(prompt)
    region = organ_table()["organs"][name]["region"] if named else None
    return tuple(region) if region else None  # type: ignore[return-value]


def _plain(text: str) -> str:
    return " ".join(text.split())


def normal_prompt_for(prompt: str, override: Optional[str] = None) -> Optional[str]:
    """The normal counterpart of ``prompt`` by the rule above; None when the contrast is off."""
    if override is not None:
        check_normal_prompt(prompt, override)
        return None if _plain(override).lower() == NORMAL_PROMPT_OFF else _plain(override)
    name, _, _ = prompt_organ(prompt)
    table = organ_table()
    return table["organs"][name or table["default"]]["normal_prompt"]


def check_normal_prompt(prompt: Optional[str], normal_prompt: str) -> None:
    """The checks of a given normal prompt that need no model: not blank, not the prompt itself."""
    if not _plain(normal_prompt):
        raise UserError('--normal-prompt is empty: give the healthy counterpart (e.g. "healthy liver") or "none"')
    if prompt and _plain(normal_prompt).lower() == _plain(prompt).lower():
        raise UserError("--normal-prompt is the prompt itself: every pixel would score 0.5; give the healthy "
                        "counterpart (e.g. \"healthy liver\") or \"none\"")
