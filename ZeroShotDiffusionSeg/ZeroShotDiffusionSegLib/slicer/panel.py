"""What the panel's widgets mean: settings -> VolumeRequest, and which runner serves them.

The Slicer widget copies its parameter node into ``PanelSettings``; everything that
decides something (validation, choice of runner, keeping a warm runner) happens here.
The panel's defaults are the request dataclasses' (``SegmentationParams``, ``VolumeRequest``);
``RANGES`` are what its number widgets offer: the request's own range, narrowed where the
full one is of no use in a spin box. The module's parameter node takes both from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from ..engine.healthy_params import PseudoHealthyParams
from ..checked_fields import Bounds
from ..engine.types import SegmentationParams
from ..errors import UserError
from ..volume import healthy
from ..volume.request import VolumeRequest
from ..worker import DEFAULT_MODEL  # noqa: F401  (the panel's default model is the worker's)
from .terminology import normalize_prompt

# Combo-box text -> request value. The order is the order in the panel.
MODES = {"Text prompt": "prompt", "Seed points": "seed", "Unsupervised regions": "unsupervised"}
AXES = {"Auto (closest to axial)": "auto", "I (sagittal-like)": "i", "J (coronal-like)": "j", "K (axial-like)": "k"}
DEVICES = {"Auto (GPU if available)": "auto", "GPU (CUDA)": "cuda", "CPU": "cpu"}
AUTO_BATCH_SIZE = 0  # the batch size spin box's minimum, shown as "Auto": chosen from free memory (None in the request)


def request_range(cls, name: str) -> Tuple[Optional[float], Optional[float]]:
    """(low, high) that request dataclass ``cls`` declares for field ``name`` (``checked_fields.bounded``)."""
    field_ = next(f for f in dataclasses.fields(cls) if f.name == name)
    bounds = next(v for v in field_.metadata.values() if isinstance(v, Bounds))
    return bounds.low, bounds.high


RANGES = {  # PanelSettings field -> (minimum, maximum) of its widget
    "kl_threshold": (0.05, 5.0),  # the request allows (0, 100]; outside this DiffSeg merges all or nothing
    "timestep": request_range(SegmentationParams, "timestep"),
    "selection_threshold": request_range(SegmentationParams, "selection_threshold"),
    "batch_size": (AUTO_BATCH_SIZE, 64),  # the request allows 256 slices; 64 already fills a large GPU
    "min_volume_mm3": (request_range(VolumeRequest, "min_volume_mm3")[0], 100000.0),  # 100 ml
}


@dataclass
class PanelSettings:
    mode: str = "prompt"  # the panel has no "auto" mode: its modes are chosen from MODES
    prompt: str = ""
    seeds_ras: List[Tuple[float, float, float]] = field(default_factory=list)
    roi_bounds_ras: Optional[Sequence[float]] = None  # xmin, xmax, ymin, ymax, zmin, zmax
    kl_threshold: float = SegmentationParams.kl_threshold
    timestep: int = SegmentationParams.timestep
    selection_threshold: float = SegmentationParams.selection_threshold
    axis: str = VolumeRequest.axis
    batch_size: int = AUTO_BATCH_SIZE if VolumeRequest.batch_size is None else VolumeRequest.batch_size
    min_volume_mm3: float = VolumeRequest.min_volume_mm3
    per_lesion: bool = not VolumeRequest.binary
    pseudo_healthy: bool = VolumeRequest.pseudo_healthy is not None  # repaint each candidate toward the normal prompt
    device: str = "auto"
    model: str = DEFAULT_MODEL
    server_url: str = ""  # empty: the local worker
    server_token: str = ""

    @property
    def local_engine(self) -> bool:
        return not self.server_url.strip()


def option_text(table: dict, value: str) -> str:
    """Request value -> combo text (the inverse of ``option_value``)."""
    return next(text for text, known in table.items() if known == value)


def option_value(table: dict, text: str) -> str:
    """Combo text -> value; a value itself is accepted too (parameter nodes store either)."""
    if text in table:
        return table[text]
    if text in table.values():
        return text
    raise UserError(f"unknown option {text!r}; expected one of {list(table)}")


def roi_corners(bounds: Sequence[float]) -> Tuple[Tuple[float, float, float], Tuple[float, float, float]]:
    """Two opposite corners from VTK-style bounds (xmin, xmax, ymin, ymax, zmin, zmax)."""
    if len(bounds) != 6:
        raise UserError("the ROI bounds must have 6 values")
    xmin, xmax, ymin, ymax, zmin, zmax = (float(v) for v in bounds)
    if xmax <= xmin or ymax <= ymin or zmax <= zmin:
        raise UserError("the ROI is empty: resize it so it has a size in all three directions")
    return (xmin, ymin, zmin), (xmax, ymax, zmax)


def build_request(settings: PanelSettings) -> VolumeRequest:
    """The request for the engine, or a UserError saying which widget to fix."""
    mode = settings.mode
    if mode not in MODES.values():
        raise UserError(f"unknown mode {mode!r}")
    prompt = normalize_prompt(settings.prompt) or None
    if mode == "prompt" and not prompt:
        raise UserError("Type what to segment (for example 'liver tumor') or pick a preset.")
    if mode == "seed" and not settings.seeds_ras:
        raise UserError("Place at least one seed point on the tumour (Seed points list).")
    params = SegmentationParams(kl_threshold=float(settings.kl_threshold), timestep=int(settings.timestep),
                                selection_threshold=float(settings.selection_threshold))
    request = VolumeRequest(
        prompt=prompt,
        mode=mode,
        seeds=[tuple(float(c) for c in point) for point in settings.seeds_ras] if mode == "seed" else [],
        coordinate_space="RAS",
        roi_physical=roi_corners(settings.roi_bounds_ras) if settings.roi_bounds_ras is not None else None,
        axis=settings.axis,
        batch_size=int(settings.batch_size) if settings.batch_size and settings.batch_size > 0 else None,
        min_volume_mm3=float(settings.min_volume_mm3),
        binary=not settings.per_lesion and mode != "unsupervised",  # merging all regions into one means nothing
        params=params,
        pseudo_healthy=PseudoHealthyParams() if settings.pseudo_healthy else None,
    )
    try:
        healthy.check_request(request, mode)  # the engine's own rule, found before anything is exported
    except UserError:  # in the panel's words: the engine's names the command-line flag
        raise UserError("'Refine with pseudo-healthy counterfactual' (Advanced) refines a lesion selection: choose "
                        "Text prompt or Seed points, or untick it.") from None
    return request


def runner_key(settings: PanelSettings) -> tuple:
    """Settings that need a different engine process/connection; others reuse the warm one."""
    if settings.local_engine:
        return ("local", settings.model.strip(), settings.device)
    return ("remote", settings.server_url.strip(), settings.server_token)


def create_runner(settings: PanelSettings, python_executable: str, pythonpath: Sequence[str] = ()):
    """A LocalWorkerRunner for this computer, or a RemoteRunner for a server URL."""
    if settings.local_engine:
        from ..runners.local import LocalWorkerRunner

        model = settings.model.strip() or DEFAULT_MODEL
        return LocalWorkerRunner.for_model(python_executable, model, settings.device, pythonpath=pythonpath)
    from ..runners.remote import RemoteRunner

    return RemoteRunner(settings.server_url.strip(), settings.server_token.strip() or None)


def format_progress(stage: str, fraction: Optional[float], eta_s: Optional[float], message: str = "") -> str:
    """'segment 45% - about 2 min left (18/40 slices)' for the progress bar's text."""
    text = stage or "working"
    if fraction is not None:
        text += f" {round(100 * fraction)}%"
    if eta_s is not None and eta_s >= 0:
        text += f" - about {round(eta_s / 60)} min left" if eta_s >= 90 else f" - about {max(1, round(eta_s))} s left"
    return text + (f" ({message})" if message else "")
