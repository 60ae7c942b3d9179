"""What a volume run is asked to do and what it produced: the contract between the
volume pipeline and its callers (CLI, Slicer worker, HTTP server)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..engine.healthy_params import PseudoHealthyParams
from ..engine.types import SegmentationParams

Point3 = Tuple[float, float, float]


@dataclass
class VolumeRequest:
    prompt: Optional[str] = None  # prompt mode when given and no seeds
    mode: str = "auto"  # "prompt" | "seed" | "unsupervised" | "auto" (seed if seeds, else prompt if prompt)
    seeds: List[Point3] = field(default_factory=list)  # physical points, in `coordinate_space`
    coordinate_space: str = "RAS"  # "RAS" or "LPS", for seeds and a physical ROI
    roi_physical: Optional[Tuple[Point3, Point3]] = None  # two opposite corners
    roi_voxels: Optional[Tuple[Tuple[int, int, int], Tuple[int, int, int]]] = None  # (i0,j0,k0),(i1,j1,k1) inclusive
    axis: str = "auto"  # "auto" (closest to the patient's axial axis) or "i" | "j" | "k"
    window: Optional[str] = None  # "WIDTH/LEVEL" to override the automatic choice
    batch_size: Optional[int] = None  # None: chosen from free memory
    min_volume_mm3: float = 0.0
    binary: bool = False
    params: SegmentationParams = field(default_factory=SegmentationParams)
    pseudo_healthy: Optional[PseudoHealthyParams] = None  # refine the selection from a counterfactual when given

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["pseudo_healthy"] is None:  # absent, not null: a peer without the option still reads the request
            del data["pseudo_healthy"]
        return data


@dataclass
class VolumeResult:
    out_dir: Path
    files: Dict[str, Path]  # "labels", "score", "lesions", "provenance" -> path
    lesions: List[dict]  # rows of lesions.csv
    timings: Dict[str, float]
    messages: List[str] = field(default_factory=list)  # what was chosen / skipped, for the user
