"""Segment names, colours and DICOM terminology for engine results.

A tumour prompt maps to the DICOM master list type Neoplasm (SCT 108369006) in the
category Morphologically Altered Structure (SCT 49755003); the anatomic region is the one of
the organ the prompt names (``prompt_words.anatomic_region``, the organ table), if any. The
segment is named after the prompt, as the user typed it, so the name says what was asked for
and the terminology says what it is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from ..prompt_words import Code, anatomic_region

CATEGORY_CONTEXT = "Segmentation category and type - DICOM master list"
REGION_CONTEXT = "Anatomic codes - DICOM master list"
MORPHOLOGICALLY_ALTERED_STRUCTURE: Code = ("SCT", "49755003", "Morphologically Altered Structure")
NEOPLASM: Code = ("SCT", "108369006", "Neoplasm")
TISSUE: Code = ("SCT", "85756007", "Tissue")  # for unsupervised regions: not claimed to be a tumour

# Neoplasm has no recommended colour in the master list; these are distinct, high-contrast
# colours (0..1 RGB), the first one for the first lesion.
LESION_COLORS = (
    (0.91, 0.30, 0.24), (0.95, 0.77, 0.06), (0.20, 0.60, 0.86), (0.61, 0.35, 0.71),
    (0.18, 0.80, 0.44), (0.90, 0.49, 0.13), (0.10, 0.74, 0.61), (0.93, 0.44, 0.67),
)


@dataclass(frozen=True)
class PromptPreset:
    label: str  # shown in the preset menu
    prompt: str  # typed into the prompt field; its words imply the rest, as for any prompt (prompt_words)


def load_presets(path) -> List[PromptPreset]:
    """Read Resources/Presets/prompts.json."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [PromptPreset(entry["label"], entry["prompt"]) for entry in data["presets"]]


def _code(code: Optional[Code]) -> str:
    return "^".join(code) if code else "^^"


def terminology_entry(segment_type: Code = NEOPLASM,
                      category: Code = MORPHOLOGICALLY_ALTERED_STRUCTURE,
                      region: Optional[Code] = None) -> str:
    """The 7-part string ``segment.SetTag(segment.GetTerminologyEntryTagName(), ...)`` takes.

    Parts: category context ~ category ~ type ~ type modifier ~ region context ~ region ~
    region modifier; coded parts are ``scheme^value^meaning`` and empty ones ``^^``.
    """
    return "~".join([CATEGORY_CONTEXT, _code(category), _code(segment_type), "^^",
                     REGION_CONTEXT, _code(region), "^^"])


def terminology_for(mode: str, prompt: Optional[str]) -> str:
    """Neoplasm (with the prompt's organ) for prompt/seed results; plain Tissue for unsupervised regions."""
    if mode == "unsupervised":
        return terminology_entry(TISSUE, TISSUE)  # type Tissue in category Tissue: the same code
    return terminology_entry(NEOPLASM, MORPHOLOGICALLY_ALTERED_STRUCTURE, anatomic_region(prompt))


def normalize_prompt(prompt: Optional[str]) -> str:
    return re.sub(r"\s+", " ", prompt or "").strip()


def base_segment_name(mode: str, prompt: Optional[str]) -> str:
    """What a result segment is called before numbering: the prompt, or what the mode found."""
    text = normalize_prompt(prompt)
    if mode == "unsupervised":
        return "Region"
    if text:
        return text
    return "Seeded lesion" if mode == "seed" else "Tumor"


def segment_names(base: str, count: int, existing: Iterable[str] = ()) -> List[str]:
    """Names for ``count`` result segments: "liver tumor" alone, else "liver tumor 1..n".

    Names already in the segmentation are skipped, so re-running never produces two
    segments with the same name (Slicer allows it, readers of the export do not).
    """
    taken = set(existing)
    names: List[str] = []
    if count == 1 and base not in taken:
        return [base]
    number = 1
    while len(names) < count:
        candidate = f"{base} {number}"
        if candidate not in taken:
            names.append(candidate)
            taken.add(candidate)
        number += 1
    return names


def segment_color(index: int) -> Tuple[float, float, float]:
    return LESION_COLORS[index % len(LESION_COLORS)]
