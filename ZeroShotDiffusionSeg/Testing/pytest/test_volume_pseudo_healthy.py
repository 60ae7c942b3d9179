"""--pseudo-healthy on volumes and images: healthy.nrrd / residual.nrrd on the input's grid, seeding,
all-or-nothing cancel, provenance, the request's wire form, and the CLI's one-line errors.

A stand-in inpainter (it repaints the region as plain body tissue) runs the volume mechanics in
milliseconds; random:tiny runs them once end to end. Nothing here says anything about quality."""

import argparse
import json
import threading

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from test_volume_fixtures import BODY_HU, ThresholdSegmenter, sphere_volume, write
from ZeroShotDiffusionSegLib import segment_command
from ZeroShotDiffusionSegLib.cli import main
from ZeroShotDiffusionSegLib.engine.healthy_params import PseudoHealthyParams
from ZeroShotDiffusionSegLib.engine.residuals import PIXEL_WEIGHT
from ZeroShotDiffusionSegLib.engine.types import SegmentationParams
from ZeroShotDiffusionSegLib.errors import Cancelled, UserError
from ZeroShotDiffusionSegLib.progress import check_cancel
from ZeroShotDiffusionSegLib.runners.protocol import request_from_dict
from ZeroShotDiffusionSegLib.volume import VolumeRequest, run_volume
from ZeroShotDiffusionSegLib.volume.pipeline import check_request

HEALTHY = PseudoHealthyParams(dilation_mm=3.0, steps=4, strength=0.5, seed=3)
WINDOW_BODY = (BODY_HU - (40 - 200)) / 400  # body tissue in the kidney window W400/L40


class BodyInpainter:
    """Repaints the region as plain body tissue; no feature residual. Steps and cancel as the real one."""

    def __init__(self):
        self.keys = []

    def repaint(self, images, regions, keys, normal_prompt, negative_prompt, params, cancel=None, on_step=None):
        self.keys += list(keys)
        for step in range(params.denoising_steps):
            if on_step is not None:
                on_step(step, None)
            check_cancel(cancel)
        return [np.where(region, np.float32(WINDOW_BODY), image).astype(np.float32) for image, region in zip(images, regions)]

    def feature_distance(self, images, healthy):
        return [np.zeros(image.shape[:2], dtype=np.float32) for image in images]


class HealthySegmenter(ThresholdSegmenter):
    def __init__(self):
        super().__init__()
        self.inpainter = BodyInpainter()

    def pseudo_healthy_inpainter(self):
        return self.inpainter


def request(**changes):
    return VolumeRequest(prompt="kidney tumor", params=SegmentationParams(selection_threshold=0.8), pseudo_healthy=HEALTHY,
                         **changes)


@pytest.fixture
def sphere_case(tmp_path):
    image, sphere = sphere_volume(noise_hu=10, air_slices=(0, 11))
    return write(image, tmp_path / "sphere.nrrd"), image, sphere


def exact_geometry(output, reference):
    return (output.GetSize() == reference.GetSize() and output.GetSpacing() == reference.GetSpacing()
            and output.GetOrigin() == reference.GetOrigin() and output.GetDirection() == reference.GetDirection())


def test_healthy_and_residual_volumes_are_on_the_inputs_exact_grid(sphere_case, tmp_path):
    path, _image, sphere = sphere_case
    segmenter = HealthySegmenter()
    result = run_volume(path, tmp_path / "out", segmenter, request())
    stored = sitk.ReadImage(path)
    healthy_image, residual_image = (sitk.ReadImage(str(result.files[key])) for key in ("healthy", "residual"))
    for output in (healthy_image, residual_image):
        assert exact_geometry(output, stored)
    healthy, residual = sitk.GetArrayFromImage(healthy_image), sitk.GetArrayFromImage(residual_image)
    original = sitk.GetArrayFromImage(stored)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(result.files["labels"])))
    assert healthy.dtype == original.dtype == np.int16 and residual.dtype == np.float32
    repainted = residual > 0
    np.testing.assert_array_equal(healthy[~sphere & (healthy != original)], BODY_HU)  # only the rim around the sphere
    assert np.all(healthy[sphere] == BODY_HU)  # the "tumour" replaced by body tissue, back in HU
    # The stand-in has no feature residual, so the fused map peaks at the pixel residual's weight.
    assert residual.min() == 0.0 and residual.max() == np.float32(PIXEL_WEIGHT) and repainted[sphere].all()
    np.testing.assert_array_equal(labels > 0, sphere)  # the refined lesion is where the residual stands out
    assert sorted(segmenter.inpainter.keys) == sorted(set(np.nonzero(sphere)[0].tolist()))  # only candidate slices


def test_same_seed_same_files_and_provenance_records_every_parameter(sphere_case, tmp_path):
    path, _image, _sphere = sphere_case
    first = run_volume(path, tmp_path / "a", HealthySegmenter(), request())
    second = run_volume(path, tmp_path / "b", HealthySegmenter(), request())
    for key in ("labels", "healthy", "residual", "lesions"):
        assert first.files[key].read_bytes() == second.files[key].read_bytes()
    provenance = json.loads(first.files["provenance"].read_text())
    section = provenance["pseudo_healthy"]
    assert section["parameters"] == HEALTHY.to_dict() and section["noise_seed"] == 3
    assert section["normal_prompt"] == "healthy kidney" and section["negative_prompt"] == "kidney tumor"
    assert provenance["request"]["pseudo_healthy"] == HEALTHY.to_dict()
    assert provenance["runtime"]["timings_s"]["pseudo_healthy"] >= 0
    assert any(message.startswith("pseudo-healthy: ") for message in first.messages)


def test_cancel_during_the_pseudo_healthy_stage_leaves_nothing(sphere_case, tmp_path):
    path, _image, _sphere = sphere_case
    cancel = threading.Event()
    stages = []

    def progress(event):
        stages.append(event.stage)
        if event.stage == "pseudo-healthy" and event.eta_s is not None:  # the stage's first event has no rate yet
            assert 0 < event.fraction < 1
            cancel.set()

    with pytest.raises(Cancelled):
        run_volume(path, tmp_path / "out", HealthySegmenter(), request(), progress=progress, cancel=cancel)
    assert "pseudo-healthy" in stages and cancel.is_set()  # cancelled from an event that carried an ETA
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sphere.nrrd"]  # no staging folder left behind


def test_request_wire_form_and_unsupervised_refusal(sphere_case, tmp_path):
    path, _image, _sphere = sphere_case
    assert "pseudo_healthy" not in VolumeRequest(prompt="x").to_dict()  # a peer without the option still reads it
    decoded = request_from_dict(json.loads(json.dumps(request().to_dict())))
    assert decoded.pseudo_healthy == HEALTHY
    with pytest.raises(UserError, match="not unsupervised"):
        check_request(path, tmp_path / "out", VolumeRequest(mode="unsupervised", pseudo_healthy=HEALTHY))


def test_tiny_engine_end_to_end_with_pseudo_healthy(tiny_segmenter, tmp_path, capsys):
    image, _ = sphere_volume(centre_index=(32, 32, 1), size=(64, 64, 3), spacing=(0.7, 0.8, 3.0), radius_mm=8,
                             noise_hu=10, air_slices=(2,))
    path = write(image, tmp_path / "small.nrrd")
    parser = argparse.ArgumentParser()
    segment_command.add_arguments(parser)
    args = parser.parse_args([path, "--prompt", "liver tumor", "--out-dir", str(tmp_path / "out"), "--model", "random:tiny",
                              "--batch-size", "2", "--progress", "json", "--pseudo-healthy", "--healthy-steps", "4",
                              "--healthy-strength", "0.5"])
    assert segment_command.run(args, lambda: tiny_segmenter) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    healthy_events = [e for e in events if e.get("stage") == "pseudo-healthy"]
    assert healthy_events and healthy_events[-1]["eta_s"] == 0.0
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions)
    stored, labels = sitk.ReadImage(path), sitk.ReadImage(str(tmp_path / "out" / "labels.nrrd"))
    for name in ("healthy.nrrd", "residual.nrrd"):
        output = sitk.ReadImage(str(tmp_path / "out" / name))
        assert exact_geometry(output, labels)  # bit for bit the grid every other output has
        assert output.GetSize() == stored.GetSize()
        for get in ("GetSpacing", "GetOrigin", "GetDirection"):  # up to the last bit of NRRD's decimal round trip
            np.testing.assert_allclose(getattr(output, get)(), getattr(stored, get)(), rtol=0, atol=1e-12)
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["pseudo_healthy"]["slices_repainted"] >= 1
    assert provenance["pseudo_healthy"]["normal_prompt"] == "healthy liver"


def test_image_outputs_with_the_tiny_engine(tmp_path):
    rows, columns = np.mgrid[0:90, 0:130]
    blob = ((rows - 45) ** 2 + (columns - 70) ** 2) < 20 ** 2
    Image.fromarray(np.where(blob, 60, 200).astype(np.uint8)).save(tmp_path / "lesion.png")
    healthy, residual = tmp_path / "healthy.png", tmp_path / "residual.png"
    code = main(["segment", str(tmp_path / "lesion.png"), "--seed", "70,45", "--out", str(tmp_path / "mask.png"),
                 "--pseudo-healthy", "--healthy-steps", "4", "--healthy-strength", "0.5", "--healthy-out", str(healthy),
                 "--residual-out", str(residual), "--model", "random:tiny", "--device", "cpu"])
    assert code == 0
    for path in (healthy, residual, tmp_path / "mask.png"):
        assert np.asarray(Image.open(path)).shape == (90, 130)


@pytest.mark.parametrize("arguments, message", [
    (["IMAGE", "--prompt", "x", "--out", "m.png", "--healthy-out", "h.png"], "--healthy-out needs --pseudo-healthy"),
    (["IMAGE", "--mode", "unsupervised", "--out", "m.png", "--pseudo-healthy"], "not unsupervised"),
    (["IMAGE", "--prompt", "x", "--out", "m.png", "--pseudo-healthy", "--residual-out", "no/dir/r.png"],
     "output folder does not exist"),
    (["IMAGE", "--prompt", "x", "--out", "m.png", "--pseudo-healthy", "--healthy-strength", "1.5"],
     "--healthy-strength) must be in (0, 1]"),
    (["VOLUME", "--prompt", "x", "--out-dir", "o", "--pseudo-healthy", "--healthy-out", "h.png"], "is for 2-D images"),
])
def test_misuse_is_one_line_before_the_model_loads(arguments, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "i.png")
    volume = write(sphere_volume(noise_hu=10)[0], tmp_path / "v.nrrd")
    arguments = [{"IMAGE": str(tmp_path / "i.png"), "VOLUME": volume}.get(a, a) for a in arguments]
    code = main(["segment", *arguments, "--model", "nobody/nothing"])  # loading it would fail differently
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and error[-1].startswith("zsdseg: error: ") and message in error[-1]
