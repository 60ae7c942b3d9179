"""Pictures a reader can read: labels.png in colour, and eval overlays turned as Slicer shows a volume, at a readable
size, with uncut titles, a legend, the random-weights banner and a whole-image prediction that does not look empty."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ZeroShotDiffusionSegLib.cli import main
from ZeroShotDiffusionSegLib.evaluation import overlays
from ZeroShotDiffusionSegLib.evaluation.overlays import SliceView


def test_labels_png_is_indexed_colour_holding_the_ids(tmp_path):
    Image.fromarray(np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))).save(tmp_path / "ramp.png")
    assert main(["segment", str(tmp_path / "ramp.png"), "--mode", "unsupervised", "--labels", str(tmp_path / "labels.png"),
                 "--model", "random:tiny", "--device", "cpu"]) == 0
    with Image.open(tmp_path / "labels.png") as image:
        assert image.mode == "P"  # a viewer shows colours
        ids = np.asarray(image)
        colours = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert ids.shape == (48, 64) and ids.min() == 1  # a program still reads the ids 1..K
    regions = np.unique(ids)
    assert len({tuple(c) for c in colours}) == regions.size and (colours.max(axis=1) > 100).all()  # one bright colour each


def test_every_region_of_a_label_map_gets_its_own_colour(tmp_path):
    from ZeroShotDiffusionSegLib.image_io import write_labels_png

    labels = np.repeat(np.repeat(np.arange(40).reshape(5, 8), 10, axis=0), 10, axis=1)
    write_labels_png(tmp_path / "regions.png", labels)
    with Image.open(tmp_path / "regions.png") as image:
        assert image.mode == "P" and np.array_equal(np.asarray(image), labels + 1)
        colours = {tuple(c) for c in np.asarray(image.convert("RGB")).reshape(-1, 3)}
    assert len(colours) == 40 and (0, 0, 0) not in colours


def test_more_labels_than_a_palette_holds_stay_16_bit_ids(tmp_path):
    from ZeroShotDiffusionSegLib.image_io import write_labels_png

    labels = np.arange(300).reshape(15, 20)
    write_labels_png(tmp_path / "many.png", labels)
    with Image.open(tmp_path / "many.png") as image:
        assert np.array_equal(np.asarray(image), labels + 1)


def direction(columns):
    """Row-major ITK direction from the LPS direction of each index axis (the matrix's columns)."""
    return tuple(np.asarray(columns, dtype=float).T.reshape(-1))


def test_a_volume_whose_j_points_anterior_is_drawn_anterior_up_and_right_on_the_left():
    """brain2's header: j runs toward anterior (LPS y decreasing). Slicer shows anterior up, the patient's right left."""
    view = SliceView.for_image(direction([(1, 0, 0), (0, -1, 0), (0, 0, 1)]), (0.5, 0.7, 6.5))
    plane = np.zeros((4, 6))  # raw slice: rows j, columns i
    plane[0, 0] = 1  # j = 0 is the most posterior row, i = 0 the patient's rightmost column
    screen = view.to_screen(plane)
    assert screen[-1, 0] == 1  # posterior at the bottom, right on the screen's left
    assert (view.view, view.edge_letters, view.row_mm, view.column_mm) == ("axial", "RLAP", 0.7, 0.5)
    identity = SliceView.for_image(direction(np.eye(3)), (1, 1, 1))
    assert identity.to_screen(plane)[0, 0] == 1  # i -> L and j -> P already read as Slicer's axial view


@pytest.mark.parametrize("columns", [
    [(0, 1, 0), (-1, 0, 0), (0, 0, 1)],  # i along P, j along R: the slice must be transposed
    [(0, 0, 1), (1, 0, 0), (0, -1, 0)],  # k is not axial: the slice axis is i
    [(-1, 0, 0), (0, 0, -1), (0, 1, 0)],  # coronal-ish acquisition
])
def test_turning_a_slice_and_its_points_round_trips(columns):
    view = SliceView.for_image(direction(columns), (0.8, 0.9, 2.0))
    volume = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    raw = view.raw_slice(volume, 2)
    screen = view.to_screen(raw)
    assert np.array_equal(view.from_screen(screen), raw)
    for row, column in [(0, 0), (raw.shape[0] - 1, 1), (2, raw.shape[1] - 1)]:
        marked = np.zeros(raw.shape, dtype=bool)
        marked[row, column] = True
        assert tuple(np.argwhere(view.to_screen(marked))[0]) == view.point_to_screen(row, column, raw.shape)
    assert view.slice_axis == int(np.argmax(np.abs(np.asarray(columns, dtype=float)[:, 2])))  # the axis closest to S


def test_titles_wrap_instead_of_being_cut():
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = overlays._font()
    title = "oracle_union_of_segments with a long pseudo_healthy refined boundary name"
    lines = overlays.wrap(title, 120, draw, font)
    assert len(lines) > 1 and " ".join(lines) == title
    assert all(draw.textlength(line, font=font) <= 120 or " " not in line for line in lines)


def panel_of(sheet: np.ndarray, index: int, panels: int, width: int) -> np.ndarray:
    margin, gap = 6, 6
    left = margin + index * (width + gap)
    return sheet[:, left:left + width]


def test_overlay_panels_are_readable_and_say_empty_from_whole(tmp_path):
    image = np.linspace(0, 1, 30 * 20).reshape(30, 20)
    truth = np.zeros((30, 20), dtype=bool)
    truth[10:20, 5:15] = True
    predictions = {"deployed": np.zeros_like(truth), "whole_image": np.ones_like(truth)}
    overlays.write_overlay(tmp_path / "o.png", image, truth, predictions, (15, 10), {"deployed": 0.0, "whole_image": 0.2},
                           "case: a heading long enough to need two lines on a narrow sheet of two panels", True)
    sheet = np.asarray(Image.open(tmp_path / "o.png").convert("RGB")).astype(int)
    width, height = overlays.screen_size((30, 20))
    assert min(width, height) == overlays.PANEL_SIDE and sheet.shape[1] >= 2 * width
    banner = sheet[2:10]
    assert (np.abs(banner - (200, 0, 0)).sum(axis=2) == 0).mean() > 0.5  # the random-weights banner across the top
    bottom = sheet[-60:]
    for colour in (overlays.TRUTH_COLOUR, overlays.PREDICTION_COLOUR, overlays.SEED_COLOUR):
        assert (np.abs(bottom - colour).sum(axis=2) == 0).sum() >= 100, colour  # the legend's swatches
    panels = sheet[-(height + 6 + 3 * 20):-3 * 20 - 6]
    empty, whole = (panel_of(panels, n, 2, width) for n in range(2))
    redness = [float((p[..., 0] - p[..., 1]).mean()) for p in (empty, whole)]
    assert redness[1] > redness[0] + 30  # a whole-image prediction is a red panel, an empty one is not


def test_without_random_weights_no_banner(tmp_path):
    truth = np.zeros((16, 16), dtype=bool)
    overlays.write_overlay(tmp_path / "o.png", np.zeros((16, 16)), truth, {"otsu": truth}, None, {"otsu": 1.0}, "case")
    sheet = np.asarray(Image.open(tmp_path / "o.png").convert("RGB")).astype(int)
    assert not (np.abs(sheet - (200, 0, 0)).sum(axis=2) == 0).any()
