"""What a volume run is asked to do and what it produced: the contract between the
volume pipeline and its callers (CLI, Slicer worker, HTTP server)."""

from __future__ import annotations

import re

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..checked_fields import bounded, check_fields, check_number, Bounds
from ..engine.healthy_params import PseudoHealthyParams
from ..engine.types import SegmentationParams
from ..errors import UserError
from ..prompt_words import check_normal_prompt

Point3 = Tuple[float, float, float]
MODES = ("auto", "prompt", "seed", "unsupervised")
MAX_PROMPT_CHARS = 1000  # far more than the text encoder's 75 tokens; bounds what a client may send
MAX_SEEDS = 64
# Coordinates far outside any scanner are refused as numbers, before geometry turns them into indices.
PHYSICAL_BOUNDS = Bounds(-1e6, 1e6, unit="mm")  # a kilometre each way
VOXEL_BOUNDS = Bounds(-1e9, 1e9)


@dataclass
class VolumeRequest:
    """One volume job, validated when it is built (``__post_init__``), whoever builds it.

    Numbers declare their range with ``bounded`` (see ``checked_fields``); the structured
    fields (mode, axis, points, boxes, prompt, window) are checked and normalised below: points
    become tuples of finite floats, voxel corners tuples of ints. A malformed value is one
    ``UserError`` line naming the field, so the server answers 400 before queueing.
    A new field: declare it here with ``bounded(...)`` or add its check to ``_check_structure``.
    """

    prompt: Optional[str] = None  # prompt mode when given and no seeds; at most MAX_PROMPT_CHARS
    normal_prompt: Optional[str] = None  # None: from the prompt's words (prompt_words.py); "none": plain prompt score
    mode: str = "auto"  # "prompt" | "seed" | "unsupervised" | "auto" (seed if seeds, else prompt if prompt)
    seeds: List[Point3] = field(default_factory=list)  # physical points, in `coordinate_space`; at most MAX_SEEDS
    coordinate_space: str = "RAS"  # "RAS" or "LPS", for seeds and a physical ROI
    roi_physical: Optional[Tuple[Point3, Point3]] = None  # two opposite corners
    roi_voxels: Optional[Tuple[Tuple[int, int, int], Tuple[int, int, int]]] = None  # (i0,j0,k0),(i1,j1,k1) inclusive
    axis: str = "auto"  # "auto" (closest to the patient's axial axis), a patient plane, or "i" | "j" | "k"
    window: Optional[str] = None  # "WIDTH/LEVEL" or a preset name, to override the automatic choice
    batch_size: Optional[int] = bounded(None, 1, 256, flag="--batch-size", title="batch size")  # None: chosen from free memory
    min_volume_mm3: float = bounded(0.0, 0.0, flag="--min-volume", unit="mm3", title="minimum lesion volume")
    binary: bool = bounded(False, flag="--binary")
    boundary: str = "none"  # "sam": LiteMedSAM redraws each slice's selection (volume/sam_refinement.py)
    boundary_points: bool = bounded(False, flag="--boundary-points")  # with "sam": points at the regions' highest scores too
    series_uid: Optional[str] = None  # the DICOM series to read from a folder holding several (--series-uid)
    params: SegmentationParams = field(default_factory=SegmentationParams)
    pseudo_healthy: Optional[PseudoHealthyParams] = None  # refine the selection from a counterfactual when given

    def __post_init__(self):
        check_fields(self)
        self._check_structure()

    def _check_structure(self) -> None:
        from .sam_refinement import BOUNDARIES
        from .slicing import AXIS_CHOICES

        if self.prompt is not None:
            if not isinstance(self.prompt, str):
                raise UserError(f"prompt (--prompt) must be text, got {type(self.prompt).__name__}")
            if len(self.prompt) > MAX_PROMPT_CHARS:
                raise UserError(f"prompt (--prompt) has {len(self.prompt)} characters; at most {MAX_PROMPT_CHARS} are accepted")
        if self.normal_prompt is not None:
            if not isinstance(self.normal_prompt, str):
                raise UserError(f"normal prompt (--normal-prompt) must be text, got {type(self.normal_prompt).__name__}")
            if len(self.normal_prompt) > MAX_PROMPT_CHARS:
                raise UserError(f"normal prompt (--normal-prompt) has {len(self.normal_prompt)} characters; "
                                f"at most {MAX_PROMPT_CHARS} are accepted")
            check_normal_prompt(self.prompt, self.normal_prompt)
        self.mode = _choice(self.mode, MODES, "mode (--mode)")
        self.axis = _choice(self.axis, AXIS_CHOICES, "axis (--axis)")
        self.boundary = _choice(self.boundary, BOUNDARIES, "boundary (--boundary)")
        self.coordinate_space = _choice(self.coordinate_space, ("RAS", "LPS"), "coordinate_space", upper=True)
        if not isinstance(self.seeds, (list, tuple)):
            raise UserError(f"seeds must be a list of X,Y,Z points, got {type(self.seeds).__name__}")
        if len(self.seeds) > MAX_SEEDS:
            raise UserError(f"{len(self.seeds)} seed points given; at most {MAX_SEEDS} are accepted")
        self.seeds = [_point(seed, float, "seed point (--seed-ras/--seed-lps)", PHYSICAL_BOUNDS) for seed in self.seeds]
        if self.roi_physical is not None:
            self.roi_physical = _corners(self.roi_physical, float, "roi_physical (--roi)", PHYSICAL_BOUNDS)
        if self.roi_voxels is not None:
            self.roi_voxels = _corners(self.roi_voxels, int, "roi_voxels (--roi ... --roi-space voxel)", VOXEL_BOUNDS)
        if self.roi_physical is not None and self.roi_voxels is not None:
            raise UserError("give either a voxel ROI or a physical ROI, not both")
        if self.series_uid is not None and not (isinstance(self.series_uid, str)
                                                and re.fullmatch(r"[0-9]+(\.[0-9]+)*", self.series_uid) and len(self.series_uid) <= 64):
            raise UserError(f"series UID (--series-uid) must be a DICOM UID (digits and dots, at most 64), got {self.series_uid!r}")
        if isinstance(self.window, str) and not self.window.strip():
            self.window = None  # an empty field means the automatic choice
        if self.window is not None:
            if not isinstance(self.window, str) or len(self.window) > 40:
                raise UserError("window (--window) must be WIDTH/LEVEL (e.g. 400/40) or a preset name")
            from .intensity import parse_window

            parse_window(self.window)
        if not isinstance(self.params, SegmentationParams):
            raise UserError(f"params must be an object of segmentation parameters, got {type(self.params).__name__}")
        if self.pseudo_healthy is not None and not isinstance(self.pseudo_healthy, PseudoHealthyParams):
            raise UserError(f"pseudo_healthy must be an object of pseudo-healthy parameters, got {type(self.pseudo_healthy).__name__}")

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["pseudo_healthy"] is None:  # absent, not null: a peer without the option still reads the request
            del data["pseudo_healthy"]
        return data


def _choice(value, choices, label: str, upper: bool = False) -> str:
    text = value.upper() if upper and isinstance(value, str) else value
    if not isinstance(text, str) or text not in choices:
        shown = repr(value)[:40] if isinstance(value, str) else type(value).__name__
        raise UserError(f"{label} must be one of {', '.join(choices)}; got {shown}")
    return text


def _point(value, kind: type, label: str, bounds: Bounds) -> tuple:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise UserError(f"{label} must be 3 numbers X,Y,Z, got {str(value)[:40]}")
    return tuple(check_number(v, kind, label, bounds) for v in value)


def _corners(value, kind: type, label: str, bounds: Bounds) -> tuple:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise UserError(f"{label} must be two corners of 3 numbers each, got {str(value)[:40]}")
    return tuple(_point(corner, kind, label, bounds) for corner in value)


@dataclass
class VolumeResult:
    out_dir: Path
    files: Dict[str, Path]  # "labels", "score", "lesions", "provenance" -> path
    lesions: List[dict]  # rows of lesions.csv
    timings: Dict[str, float]
    messages: List[str] = field(default_factory=list)  # what was chosen / skipped, for the user
