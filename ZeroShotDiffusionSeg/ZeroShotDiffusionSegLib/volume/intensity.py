"""Grey values -> the [0, 1] images the engine sees: CT windows chosen from the prompt, percentiles otherwise.

The diffusion model was trained on photographs, so what it "sees" is what a radiologist would see
on screen: a CT slice through a display window (the organ table, Resources/Presets/organs.json), or an
MR slice stretched between the volume's 1st and 99th percentile (docs/algorithms.md#ct-windows).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np

from ..errors import UserError
from ..prompt_words import window_preset_for, window_presets

# CT in Hounsfield units has air near -1000, and scanners pad outside the field of view with
# -1024, -2000 or -3024; MR and PET intensities are (nearly) never that negative.
CT_MIN_AT_MOST = -500.0
CT_MIN_AT_LEAST = -3100.0
CT_HIGH_PERCENTILE_AT_MOST = 4000.0
AIR_HU = -500.0  # a CT slice with nothing above this is air only (no body)
PERCENTILES = (1.0, 99.0)
# Percentiles over at most this many voxels (a fixed stride, so the result is deterministic).
PERCENTILE_SAMPLE = 4_000_000
NO_BODY_MAX = 0.05  # a non-CT slice whose brightest voxel is under 5% of the window holds no body


@dataclass(frozen=True)
class IntensityChoice:
    """How raw values became [0, 1]: ``lower`` maps to 0 and ``upper`` to 1 (clipped)."""

    is_ct: bool
    name: str  # preset name, "override" or "percentile"
    lower: float
    upper: float
    reason: str

    def describe(self) -> str:
        if self.name == "percentile":
            return f"intensity: {self.reason}; window {self.lower:g}..{self.upper:g}"
        width, level = self.upper - self.lower, (self.upper + self.lower) / 2
        kind = "CT window" if self.is_ct else "window"
        return f"intensity: {kind} '{self.name}' W{width:g}/L{level:g} ({self.reason})"

    def to_dict(self) -> dict:
        return asdict(self)


def _sample(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    stride = max(1, flat.size // PERCENTILE_SAMPLE)
    return flat[::stride]


def looks_like_ct(array: np.ndarray) -> bool:
    """True when the values are in the Hounsfield range (air present, no MR-like huge values)."""
    low = float(array.min())
    if not CT_MIN_AT_LEAST <= low <= CT_MIN_AT_MOST:
        return False
    return float(np.percentile(_sample(array), 99.5)) <= CT_HIGH_PERCENTILE_AT_MOST


def _window_bounds(width: float, level: float) -> Tuple[float, float]:
    return level - width / 2.0, level + width / 2.0


def parse_window(text: str) -> Tuple[str, float, float]:
    """``WIDTH/LEVEL`` (e.g. ``400/40``, ``1500/-600``) or a preset name -> (name, lower, upper)."""
    presets = window_presets()
    text = text.strip()
    if text.lower() in presets:
        preset = presets[text.lower()]
        return (text.lower(),) + _window_bounds(preset["width"], preset["level"])
    match = re.fullmatch(r"\s*([-+]?\d+(?:\.\d*)?)\s*/\s*([-+]?\d+(?:\.\d*)?)\s*", text)
    if not match:
        raise UserError(f"--window must be WIDTH/LEVEL (e.g. 400/40) or one of {', '.join(presets)}; got {text!r}")
    width, level = float(match.group(1)), float(match.group(2))
    if width <= 0:
        raise UserError(f"--window width must be positive; got {text!r}")
    return ("override",) + _window_bounds(width, level)


def choose_intensity(array: np.ndarray, prompt: Optional[str] = None, window: Optional[str] = None) -> IntensityChoice:
    """CT: a preset window from the prompt's words (or ``window``). Other images: 1st-99th percentile."""
    is_ct = looks_like_ct(array)
    if window:
        name, lower, upper = parse_window(window)
        reason = "--window given" if is_ct else (
            f"--window given, but the volume does not look like CT (values {float(array.min()):g}..{float(array.max()):g}, "
            "not Hounsfield units): check the window")
        return IntensityChoice(is_ct, name, lower, upper, reason)
    if is_ct:
        name, why = window_preset_for(prompt)
        preset = window_presets()[name]
        return IntensityChoice(True, name, *_window_bounds(preset["width"], preset["level"]), f"CT detected, {why}")
    lower, upper = (float(v) for v in np.percentile(_sample(array), PERCENTILES))
    if upper <= lower:  # mostly one value (e.g. background): stretch the full range instead
        lower, upper = float(array.min()), float(array.max())
    reason = f"not CT (values {float(array.min()):g}..{float(array.max()):g}), 1st-99th percentile"
    return IntensityChoice(False, "percentile", lower, upper, reason)


def to_unit_range(values: np.ndarray, choice: IntensityChoice) -> np.ndarray:
    """Raw values -> float32 in [0, 1] through the chosen window."""
    scaled = (values.astype(np.float32) - np.float32(choice.lower)) / np.float32(choice.upper - choice.lower)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def has_body(raw_slice: np.ndarray, choice: IntensityChoice) -> bool:
    """False for a slice that is constant or air only; such slices are skipped, not segmented."""
    if raw_slice.size == 0 or raw_slice.min() == raw_slice.max():
        return False
    if choice.is_ct:
        return bool(raw_slice.max() > AIR_HU)
    return bool(to_unit_range(np.array([raw_slice.max()]), choice)[0] >= NO_BODY_MAX)
