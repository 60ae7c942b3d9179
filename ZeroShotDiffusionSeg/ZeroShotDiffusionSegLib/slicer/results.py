"""A finished run as the panel shows it: segments to create, their labels, the lesion table.

``ResultSession`` holds the score map and labels read once after the run; ``view(t)``
gives what the segmentation should contain at slider value ``t``. Only prompt mode has a
live threshold: seed and unsupervised results, and results refined by the pseudo-healthy
counterfactual (re-thresholding the score would discard the refinement), are shown as the
engine wrote them.

The overlays a result offers over the input in the slice views, in the order of the panel's list:
the score map, and after a pseudo-healthy run the residual and the pseudo-healthy volume (faded
over the input by the opacity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Tuple

import numpy as np

from .geometry import Geometry
from .terminology import base_segment_name, segment_color, segment_names, terminology_for
from .threshold import lesion_rows, threshold_to_labels

TABLE_HEADERS = ["Segment", "Volume (ml)", "Longest axial diameter (mm)", "Mean score"]
SCORE, RESIDUAL, HEALTHY, NO_OVERLAY = "Score", "Residual", "Pseudo-healthy (fade)", "None"
OVERLAYS = (SCORE, RESIDUAL, HEALTHY, NO_OVERLAY)
DEFAULT_OPACITY = 0.4
REFINED_NOTE = ("The threshold slider is off for this result: its segments are the pseudo-healthy refinement, "
                "which re-thresholding the score would discard. Run again without the checkbox to use the slider.")


def overlay_choices(available: Iterable[str]) -> List[str]:
    """The overlays to list for a result holding the ``available`` ones, in panel order; "None" always."""
    present = set(available)
    return [name for name in OVERLAYS if name in present or name == NO_OVERLAY]


def default_overlay(available: Iterable[str]) -> str:
    """What a result shows first: the residual after a pseudo-healthy run, else the score, else nothing."""
    present = set(available)
    return next((name for name in (RESIDUAL, SCORE) if name in present), NO_OVERLAY)


@dataclass
class SegmentSpec:
    name: str
    label: int  # value in ResultView.labels
    color: Tuple[float, float, float]
    terminology: str


@dataclass
class ResultView:
    labels: np.ndarray  # numpy (k, j, i), on the input volume's grid
    segments: List[SegmentSpec]
    lesions: List[dict] = field(default_factory=list)  # lesions.csv rows, in segment order


@dataclass
class ResultSession:
    mode: str  # "prompt" | "seed" | "unsupervised"
    prompt: Optional[str]
    score: np.ndarray  # float32 0..1, numpy (k, j, i)
    labels: np.ndarray  # the engine's labels.nrrd
    geometry: Geometry
    threshold: float = 0.5  # the engine's selection threshold
    per_lesion: bool = True
    min_volume_mm3: float = 0.0
    refined: bool = False  # labels are the pseudo-healthy refinement of the score's selection

    @property
    def live(self) -> bool:
        """Whether the threshold slider changes the result (prompt mode, not refined)."""
        return self.mode == "prompt" and not self.refined

    @property
    def threshold_note(self) -> Optional[str]:
        """Why the slider is off although the result is a prompt one; None otherwise."""
        return REFINED_NOTE if self.mode == "prompt" and self.refined else None

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.geometry.spacing))

    def view(self, threshold: Optional[float] = None, existing_names: Iterable[str] = ()) -> ResultView:
        if self.live:
            labels, count = threshold_to_labels(self.score, self.threshold if threshold is None else threshold,
                                                self.voxel_volume_mm3, self.min_volume_mm3, self.per_lesion)
        else:
            labels = np.asarray(self.labels)
            count = int(labels.max()) if labels.size else 0
        base = base_segment_name(self.mode, self.prompt)
        names = segment_names(base, count, existing_names)
        terminology = terminology_for(self.mode, self.prompt)
        segments = [SegmentSpec(name, label, segment_color(label - 1), terminology)
                    for label, name in zip(range(1, count + 1), names)]
        rows = [] if self.mode == "unsupervised" else lesion_rows(labels, self.score, self.geometry)
        return ResultView(labels, segments, rows)


def table_cells(view: ResultView) -> List[List[str]]:
    """One row of text cells per lesion, matching TABLE_HEADERS."""
    cells = []
    for segment, row in zip(view.segments, view.lesions):
        cells.append([segment.name, f"{row['volume_ml']:.2f}", f"{row['longest_axial_diameter_mm']:.1f}",
                      f"{row['mean_score']:.2f}"])
    return cells


def lesion_centre_ras(row: dict) -> Tuple[float, float, float]:
    """Where to centre the views when a table row is clicked."""
    return float(row["centroid_ras_x"]), float(row["centroid_ras_y"]), float(row["centroid_ras_z"])
