"""The overlay PNG ``zsdseg eval`` writes per case: one panel per selection mode, drawn as a reader expects.

* Volumes are shown as 3D Slicer shows them: the slice along the index axis closest to the patient's
  axial (else coronal, sagittal) axis, turned so that the patient's right is on the screen's left
  (radiological convention), anterior (or superior) up, with orientation letters on the edges and
  square millimetres (``SliceView``). The nearest axis-aligned turn is used: an oblique volume is not
  resampled.
* Panels are scaled (nearest neighbour, so voxels stay visible) to at least ``PANEL_SIDE`` pixels;
  titles wrap instead of being cut; each panel carries its Dice.
* Truth: green outline. Prediction: red outline over a red tint, so a prediction covering the whole
  image reads as a red panel, not as nothing; titles also say "empty" or "whole image".
* A legend under the panels, and a red "random weights" banner over them when the model's weights are random.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .metrics import surface

PANEL_SIDE = 320  # the shorter side of a panel, in screen pixels (unless the longer would pass MAX_SIDE)
MAX_SIDE = 720
TRUTH_COLOUR = (40, 220, 40)
PREDICTION_COLOUR = (255, 40, 40)
SEED_COLOUR = (255, 230, 0)
FILL_ALPHA = 0.3
FONT_SIZE = 15
RANDOM_WEIGHTS_BANNER = "RANDOM WEIGHTS: these segmentations are meaningless (they only prove the harness runs)"

# Per view (named by the patient axis the slice's normal is closest to): the LPS direction that points
# to the screen's right and down, and the letters on the left, right, top and bottom edges (Slicer's).
_VIEWS = {
    "axial": ((1, 0, 0), (0, 1, 0), "RLAP"),
    "coronal": ((1, 0, 0), (0, 0, -1), "RLSI"),
    "sagittal": ((0, 1, 0), (0, 0, -1), "APSI"),
}
_NORMALS = {"sagittal": 0, "coronal": 1, "axial": 2}  # LPS component of each view's normal


@dataclass(frozen=True)
class SliceView:
    """How a slice of a (k, j, i) array is turned for the screen, and back.

    A raw slice (``np.take(array, index, axis=2 - slice_axis)``) has the larger remaining ITK axis as
    rows, as the pipeline's slices. ``to_screen`` transposes and flips it; ``from_screen`` undoes it."""

    slice_axis: int  # ITK index axis the slice is taken along
    view: str
    transpose: bool
    flip_rows: bool
    flip_columns: bool
    row_mm: float  # screen row and column spacing
    column_mm: float

    @classmethod
    def for_image(cls, direction: Sequence[float], spacing: Sequence[float]) -> "SliceView":
        """The axial view if an index axis is closest to the patient's S axis, as Slicer's red slice."""
        matrix = np.asarray(direction, dtype=float).reshape(3, 3)  # column a: LPS direction of ITK axis a
        slice_axis = int(np.argmax(np.abs(matrix[2, :])))
        normal = np.abs(matrix[:, slice_axis])
        view = max(_NORMALS, key=lambda name: normal[_NORMALS[name]])
        right, down, _ = _VIEWS[view]
        row_axis, column_axis = sorted((a for a in range(3) if a != slice_axis), reverse=True)
        transpose = abs(matrix[:, row_axis] @ right) > abs(matrix[:, column_axis] @ right)
        shown_columns, shown_rows = (row_axis, column_axis) if transpose else (column_axis, row_axis)
        return cls(slice_axis, view, bool(transpose),
                   flip_rows=bool(matrix[:, shown_rows] @ down < 0), flip_columns=bool(matrix[:, shown_columns] @ right < 0),
                   row_mm=float(spacing[shown_rows]), column_mm=float(spacing[shown_columns]))

    @property
    def edge_letters(self) -> str:
        """Left, right, top, bottom."""
        return _VIEWS[self.view][2]

    def raw_slice(self, array: np.ndarray, index: int) -> np.ndarray:
        return np.take(array, index, axis=2 - self.slice_axis)

    def to_screen(self, plane: np.ndarray) -> np.ndarray:
        plane = plane.T if self.transpose else plane
        plane = plane[::-1] if self.flip_rows else plane
        return plane[:, ::-1] if self.flip_columns else plane

    def from_screen(self, plane: np.ndarray) -> np.ndarray:
        plane = plane[:, ::-1] if self.flip_columns else plane
        plane = plane[::-1] if self.flip_rows else plane
        return plane.T if self.transpose else plane

    def point_to_screen(self, row: int, column: int, shape: Tuple[int, int]) -> Tuple[int, int]:
        """A raw slice's (row, column) on the screen; ``shape`` is the raw slice's."""
        rows, columns = (shape[1], shape[0]) if self.transpose else shape
        row, column = (column, row) if self.transpose else (row, column)
        return (rows - 1 - row if self.flip_rows else row), (columns - 1 - column if self.flip_columns else column)


def window_for_display(array: np.ndarray) -> np.ndarray:
    """Any-range slice to [0, 1] by its 1st-99th percentiles, for overlays of CT and MR."""
    low, high = np.percentile(array, [1, 99])
    return np.clip((array - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(array, dtype=np.float64)


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def screen_size(shape: Tuple[int, int], row_mm: float = 1.0, column_mm: float = 1.0) -> Tuple[int, int]:
    """(width, height) in screen pixels: square millimetres, the shorter side PANEL_SIDE, the longer at most MAX_SIDE."""
    width_mm, height_mm = shape[1] * column_mm, shape[0] * row_mm
    scale = min(PANEL_SIDE / min(width_mm, height_mm), MAX_SIDE / max(width_mm, height_mm))
    return max(1, round(width_mm * scale)), max(1, round(height_mm * scale))


def _resize(array: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if array.dtype == bool:
        return np.asarray(Image.fromarray(array.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127
    return np.asarray(Image.fromarray(array).resize(size, Image.NEAREST))


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(surface(mask))  # two pixels wide at screen scale


def overlay_panel(image: np.ndarray, truth: np.ndarray, prediction: Optional[np.ndarray], seed_rc=None,
                  row_mm: float = 1.0, column_mm: float = 1.0) -> np.ndarray:
    """RGB uint8 at screen size: the image, the prediction tinted and outlined red, the truth outlined green,
    the seed a yellow cross. Inputs are already turned for the screen."""
    size = screen_size(np.asarray(truth).shape, row_mm, column_mm)
    rgb = _resize(_to_rgb8(image), size).astype(np.float64)
    if prediction is not None:
        shown = _resize(np.asarray(prediction, dtype=bool), size)
        rgb[shown] = (1 - FILL_ALPHA) * rgb[shown] + FILL_ALPHA * np.asarray(PREDICTION_COLOUR)
        rgb[_outline(shown)] = PREDICTION_COLOUR
    rgb[_outline(_resize(np.asarray(truth, dtype=bool), size))] = TRUTH_COLOUR
    if seed_rc is not None:
        rows, columns = np.asarray(truth).shape
        row = int((seed_rc[0] + 0.5) * size[1] / rows)
        column = int((seed_rc[1] + 0.5) * size[0] / columns)
        arm, gap = max(6, min(size) // 30), 3  # a hollow centre leaves the outlines under the seed visible
        for start, stop in ((row - arm, row - gap), (row + gap + 1, row + arm + 1)):
            rgb[max(start, 0):max(stop, 0), max(column - 1, 0):column + 2] = SEED_COLOUR
        for start, stop in ((column - arm, column - gap), (column + gap + 1, column + arm + 1)):
            rgb[max(row - 1, 0):row + 2, max(start, 0):max(stop, 0)] = SEED_COLOUR
    return rgb.astype(np.uint8)


def _font(size: int = FONT_SIZE):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def wrap(text: str, width: int, draw, font) -> List[str]:
    """Words on as many lines as ``width`` pixels need (a word longer than a line gets its own line)."""
    lines: List[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines or [""]


def _coverage_note(prediction: Optional[np.ndarray], shown: str) -> str:
    """" (empty slice)", " (whole image)"...: what the panel shows (a volume's Dice is over the whole volume)."""
    if prediction is None:
        return ""
    prediction = np.asarray(prediction, dtype=bool)
    return f" (empty {shown})" if not prediction.any() else f" (whole {shown})" if prediction.all() else ""


def write_overlay(path: Path, image: np.ndarray, truth: np.ndarray, predictions: Dict[str, np.ndarray], seed_rc=None,
                  dice: Optional[Dict[str, float]] = None, heading: str = "", random_weights: bool = False,
                  view: Optional[SliceView] = None) -> None:
    """One panel per mode side by side under a heading, a legend below; ``view`` (volumes) adds the spacing and
    orientation letters. Image, masks and seed are given already turned for the screen."""
    from PIL import Image, ImageDraw

    font, small = _font(), _font(FONT_SIZE - 2)
    row_mm, column_mm = (view.row_mm, view.column_mm) if view is not None else (1.0, 1.0)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = FONT_SIZE + 5
    panels = []
    for mode, prediction in predictions.items():
        picture = Image.fromarray(overlay_panel(image, truth, prediction, seed_rc, row_mm, column_mm))
        if view is not None:
            _draw_edge_letters(ImageDraw.Draw(picture), picture.size, view.edge_letters, font)
        score = f"Dice {dice[mode]:.3f}" if dice and mode in dice else ""
        title = wrap(mode, picture.width - 8, measure, font) + wrap(score + _coverage_note(prediction, "image" if view is None else "slice"), picture.width - 8, measure, font)
        panels.append((title, picture))
    title_height = max(len(title) for title, _ in panels) * line + 6
    gap, margin = 6, 6
    width = sum(picture.width for _, picture in panels) + gap * (len(panels) - 1) + 2 * margin
    legend = [(TRUTH_COLOUR, "ground truth (outline)"), (PREDICTION_COLOUR, "prediction (outline and tint)")]
    legend += [(SEED_COLOUR, "seed (cross)")] if seed_rc is not None else []
    header = ([(RANDOM_WEIGHTS_BANNER, (255, 255, 255), (200, 0, 0))] if random_weights else []) + (
        [(heading, (255, 255, 255), None)] if heading else [])
    header_lines = [(text, colour, background) for raw, colour, background in header
                    for text in wrap(raw, width - 2 * margin, measure, font)]
    legend_lines = _legend_lines(legend, width - 2 * margin, measure, small)
    top = margin + len(header_lines) * line
    height = top + title_height + max(picture.height for _, picture in panels) + margin + len(legend_lines) * line + margin
    sheet = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for number, (text, colour, background) in enumerate(header_lines):
        y = margin + number * line
        if background is not None:
            draw.rectangle((0, y - 2, width, y + line - 2), fill=background)
        draw.text((margin, y), text, fill=colour, font=font)
    x = margin
    for title, picture in panels:
        for number, text in enumerate(title):
            draw.text((x + 2, top + 3 + number * line), text, fill=(255, 255, 255), font=font)
        sheet.paste(picture, (x, top + title_height))
        x += picture.width + gap
    y = top + title_height + max(picture.height for _, picture in panels) + margin
    for entries in legend_lines:
        x = margin
        for colour, text in entries:
            draw.rectangle((x, y + 3, x + 12, y + 15), fill=colour)
            draw.text((x + 18, y + 1), text, fill=(230, 230, 230), font=small)
            x += 18 + int(draw.textlength(text, font=small)) + 18
        y += line
    sheet.save(path)


def _legend_lines(entries, width: int, draw, font) -> List[list]:
    lines: List[list] = [[]]
    used = 0
    for colour, text in entries:
        need = 18 + int(draw.textlength(text, font=font)) + 18
        if lines[-1] and used + need > width:
            lines.append([])
            used = 0
        lines[-1].append((colour, text))
        used += need
    return lines


def _draw_edge_letters(draw, size: Tuple[int, int], letters: str, font) -> None:
    width, height = size
    left, right, top, bottom = letters
    for text, (x, y) in ((left, (4, height // 2 - 8)), (right, (width - 14, height // 2 - 8)),
                         (top, (width // 2 - 4, 2)), (bottom, (width // 2 - 4, height - 19))):
        draw.text((x, y), text, fill=(255, 220, 120), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
