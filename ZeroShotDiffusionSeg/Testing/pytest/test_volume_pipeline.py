"""run_volume with a thresholding stub engine: geometry, selection, lesions, ROI, seeds, outputs, batching, cancel."""

import csv
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from test_volume_fixtures import SPACING, ThresholdSegmenter, sphere_volume, write
from ZeroShotDiffusionSegLib.engine.types import SegmentationParams
from ZeroShotDiffusionSegLib.errors import Cancelled, UserError
from ZeroShotDiffusionSegLib.volume import VolumeRequest, run_volume
from ZeroShotDiffusionSegLib.volume import batching, geometry

PROMPT = SegmentationParams(selection_threshold=0.8)  # stub: sphere scores 1.0, body ~0.55 of the maximum


def read(path):
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def same_geometry(a, b):
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-12)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-12)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-12))


@pytest.fixture
def sphere_case(tmp_path):
    image, sphere = sphere_volume(noise_hu=10, air_slices=(0, 11))
    return write(image, tmp_path / "sphere.nrrd"), image, sphere


def test_prompt_mode_returns_the_sphere_on_its_voxels_with_the_input_geometry(sphere_case, tmp_path):
    path, image, sphere = sphere_case
    result = run_volume(path, tmp_path / "out", ThresholdSegmenter(), VolumeRequest(prompt="kidney tumor", params=PROMPT))
    labels_image, labels = read(result.files["labels"])
    score_image, score = read(result.files["score"])
    for output in (labels_image, score_image):
        assert same_geometry(output, image)
    assert labels.dtype == np.uint16 and score.dtype == np.float32
    np.testing.assert_array_equal(labels > 0, sphere)
    assert score.max() == 1.0 and score.min() == 0.0
    np.testing.assert_array_equal(score >= PROMPT.selection_threshold, labels > 0)  # re-thresholding re-creates it
    assert any("kidney" in m for m in result.messages)
    assert any("10 segmented, 0 outside the ROI, 2 without body" in m for m in result.messages)


def test_lesion_table_measures_the_sphere(sphere_case, tmp_path):
    path, image, sphere = sphere_case
    result = run_volume(path, tmp_path / "out", ThresholdSegmenter(), VolumeRequest(prompt="tumor", params=PROMPT))
    with open(result.files["lesions"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows == [{k: str(v) for k, v in result.lesions[0].items()}]
    row = result.lesions[0]
    voxel_count_ml = sphere.sum() * np.prod(SPACING) / 1000.0
    assert row["id"] == 1 and row["voxels"] == sphere.sum()
    assert abs(row["volume_ml"] - voxel_count_ml) <= 0.01 * voxel_count_ml
    centre_lps = np.array(image.TransformIndexToPhysicalPoint((24, 20, 6)))
    lps = np.array([row["centroid_lps_x"], row["centroid_lps_y"], row["centroid_lps_z"]])
    ras = np.array([row["centroid_ras_x"], row["centroid_ras_y"], row["centroid_ras_z"]])
    assert np.linalg.norm(lps - centre_lps) < 0.3  # a voxelised sphere's centroid is its centre
    np.testing.assert_allclose(ras, lps * [-1, -1, 1])
    # Longest in-plane chord between voxel centres: at most the diameter, at least it minus a voxel diagonal.
    assert 14.0 - np.hypot(0.8, 0.9) <= row["longest_axial_diameter_mm"] <= 14.0
    assert row["mean_score"] == 1.0


@pytest.mark.parametrize("space", ["RAS", "LPS"])
def test_seed_mode_grows_from_an_off_centre_slice_to_the_whole_sphere(sphere_case, tmp_path, space):
    path, image, sphere = sphere_case
    seed_lps = image.TransformIndexToPhysicalPoint((24, 20, 4))  # slice 4: a 4.9 mm disc of the 7 mm sphere
    seed = geometry.from_lps(seed_lps, space)
    result = run_volume(path, tmp_path / "out", ThresholdSegmenter(), VolumeRequest(seeds=[seed], coordinate_space=space))
    _, labels = read(result.files["labels"])
    np.testing.assert_array_equal(labels > 0, sphere)
    assert len(result.lesions) == 1 and result.lesions[0]["mean_score"] == 1.0
    provenance = json.loads(result.files["provenance"].read_text())
    assert provenance["mode"] == "seed" and provenance["seeds_ijk"] == [[24, 20, 4]]


def test_two_seeds_give_two_lesions_numbered_by_size_and_min_volume_drops_the_small_one(tmp_path):
    image, sphere = sphere_volume(centre_index=(12, 12, 6), radius_mm=6.0, more_spheres=[((36, 28, 6), 4.0)], noise_hu=10)
    path = write(image, tmp_path / "two.nrrd")
    seeds = [image.TransformIndexToPhysicalPoint((36, 28, 6)), image.TransformIndexToPhysicalPoint((12, 12, 6))]
    result = run_volume(path, tmp_path / "out", ThresholdSegmenter(), VolumeRequest(seeds=seeds, coordinate_space="LPS"))
    _, labels = read(result.files["labels"])
    np.testing.assert_array_equal(labels > 0, sphere)
    big, small = result.lesions
    assert big["voxels"] > small["voxels"] and labels[6, 12, 12] == 1 and labels[6, 28, 36] == 2
    small_mm3 = small["volume_ml"] * 1000
    kept = run_volume(path, tmp_path / "out2", ThresholdSegmenter(),
                      VolumeRequest(seeds=seeds, coordinate_space="LPS", min_volume_mm3=small_mm3 + 1))
    assert [row["voxels"] for row in kept.lesions] == [big["voxels"]]
    assert any("1 smaller than" in m for m in kept.messages)


def test_a_seed_selects_its_own_lesion_not_look_alikes_elsewhere_in_the_same_region(tmp_path):
    # The stub puts both spheres in one region ("bright") on every slice; the seed asks for one of them.
    image, sphere = sphere_volume(centre_index=(12, 12, 6), radius_mm=6.0, more_spheres=[((36, 28, 6), 6.0)], noise_hu=10)
    path = write(image, tmp_path / "two.nrrd")
    seed = image.TransformIndexToPhysicalPoint((36, 28, 5))
    result = run_volume(path, tmp_path / "out", ThresholdSegmenter(), VolumeRequest(seeds=[seed], coordinate_space="LPS"))
    _, labels = read(result.files["labels"])
    seeded = np.zeros_like(sphere)
    seeded[:, 20:, 24:] = sphere[:, 20:, 24:]  # the seeded sphere's quadrant
    np.testing.assert_array_equal(labels > 0, seeded)
    assert len(result.lesions) == 1


def test_a_seed_inside_a_cropping_roi_maps_to_the_cropped_slice_pixels(sphere_case, tmp_path):
    path, image, sphere = sphere_case
    seed = image.TransformIndexToPhysicalPoint((27, 22, 6))
    roi = ((15, 9, 2), (40, 33, 10))  # crops every slice in-plane: pixel (x, y) = (i - 15, j - 9)
    result = run_volume(path, tmp_path / "out", ThresholdSegmenter(),
                        VolumeRequest(seeds=[seed], coordinate_space="LPS", roi_voxels=roi))
    _, labels = read(result.files["labels"])
    np.testing.assert_array_equal(labels > 0, sphere)  # the sphere lies inside the ROI
    assert any("9 segmented, 3 outside the ROI" in m for m in result.messages)


def test_voxel_roi_limits_slices_and_in_plane_extent(sphere_case, tmp_path):
    path, image, sphere = sphere_case
    roi = ((0, 0, 5), (24, 39, 7))  # half the sphere in i, slices 5..7
    result = run_volume(path, tmp_path / "out", ThresholdSegmenter(), VolumeRequest(prompt="tumor", roi_voxels=roi, params=PROMPT))
    _, labels = read(result.files["labels"])
    expected = np.zeros_like(sphere)
    expected[5:8, :, 0:25] = sphere[5:8, :, 0:25]
    np.testing.assert_array_equal(labels > 0, expected)
    assert any("3 segmented, 9 outside the ROI, 0 without body" in m for m in result.messages)


def test_physical_ras_roi_lands_on_the_expected_voxels(sphere_case, tmp_path):
    path, image, sphere = sphere_case
    corner_a = geometry.lps_to_ras(image.TransformIndexToPhysicalPoint((14, 10, 4)))
    corner_b = geometry.lps_to_ras(image.TransformIndexToPhysicalPoint((34, 30, 7)))
    request = VolumeRequest(prompt="tumor", roi_physical=(corner_a, corner_b), coordinate_space="RAS", params=PROMPT)
    result = run_volume(path, tmp_path / "out", ThresholdSegmenter(), request)
    box = geometry.physical_roi_box(image, corner_a, corner_b, "RAS")
    assert box.contains((14, 10, 4)) and box.contains((34, 30, 7))
    assert 0 < box.lower[2] and box.upper[2] < 11  # the box excludes slices ...
    outside_slices = 12 - (box.upper[2] - box.lower[2] + 1)
    assert any(f", {outside_slices} outside the ROI" in m for m in result.messages)  # ... and says so
    provenance = json.loads(result.files["provenance"].read_text())
    assert provenance["slicing"]["roi_ijk"] == {"lower": list(box.lower), "upper": list(box.upper)}
    _, labels = read(result.files["labels"])
    outside = np.ones_like(sphere)
    outside[box.numpy_slices()] = False
    assert not labels[outside].any() and (labels > 0).sum() == sphere[box.numpy_slices()].sum()


def test_binary_labels_are_uint8_zero_one(sphere_case, tmp_path):
    path, _, sphere = sphere_case
    result = run_volume(path, tmp_path / "out", ThresholdSegmenter(), VolumeRequest(prompt="tumor", binary=True, params=PROMPT))
    _, labels = read(result.files["labels"])
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1}
    np.testing.assert_array_equal(labels == 1, sphere)


def test_unsupervised_mode_writes_each_slices_regions_and_no_lesions(sphere_case, tmp_path):
    path, image, sphere = sphere_case
    result = run_volume(path, tmp_path / "out", ThresholdSegmenter(), VolumeRequest(mode="unsupervised"))
    _, labels = read(result.files["labels"])
    _, score = read(result.files["score"])
    assert result.lesions == [] and not score.any()
    np.testing.assert_array_equal(labels[1:11], np.where(sphere, 2, 1)[1:11])  # stub regions 0/1 stored as 1/2
    assert not labels[[0, 11]].any()  # air slices were not segmented
    assert result.files["lesions"].read_text().startswith("id,voxels,volume_ml")


def test_same_input_gives_byte_identical_outputs(sphere_case, tmp_path):
    path, _, _ = sphere_case
    first = run_volume(path, tmp_path / "a", ThresholdSegmenter(), VolumeRequest(prompt="tumor", params=PROMPT))
    second = run_volume(path, tmp_path / "b", ThresholdSegmenter(), VolumeRequest(prompt="tumor", params=PROMPT))
    for key in ("labels", "score", "lesions"):
        assert first.files[key].read_bytes() == second.files[key].read_bytes(), key
    one, two = (json.loads(r.files["provenance"].read_text()) for r in (first, second))
    one.pop("runtime"), two.pop("runtime")
    assert one == two
    assert len(one["input"]["sha256"]) == 64 and one["segmenter"]["model_id"] == "stub:threshold"
    assert one["request"]["params"]["selection_threshold"] == 0.8 and one["versions"]["SimpleITK"]


def test_out_of_memory_halves_the_batch_and_gives_the_same_result(sphere_case, tmp_path):
    path, _, _ = sphere_case
    stub = ThresholdSegmenter(fail_above=2)
    result = run_volume(path, tmp_path / "out", stub, VolumeRequest(prompt="tumor", batch_size=8, params=PROMPT))
    reference = run_volume(path, tmp_path / "ref", ThresholdSegmenter(), VolumeRequest(prompt="tumor", batch_size=1, params=PROMPT))
    assert stub.batch_sizes == [2, 2, 2, 2, 2]
    runtime = json.loads(result.files["provenance"].read_text())["runtime"]
    assert (runtime["batch_size_initial"], runtime["batch_size_final"], runtime["out_of_memory_retries"]) == (8, 2, 2)
    assert result.files["labels"].read_bytes() == reference.files["labels"].read_bytes()


def test_out_of_memory_with_one_slice_is_a_user_error_and_writes_nothing(sphere_case, tmp_path):
    path, _, _ = sphere_case
    with pytest.raises(UserError, match="out of memory with one slice per pass"):
        run_volume(path, tmp_path / "out", ThresholdSegmenter(fail_above=0), VolumeRequest(prompt="tumor", batch_size=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sphere.nrrd"]


def test_batch_size_comes_from_free_memory_with_a_per_device_cap(monkeypatch):
    class Fake:
        model_resolution = 512
        device = "cpu"

    monkeypatch.setattr(batching, "_free_memory_bytes", lambda device, segmenter=None: int(6 * batching.BYTES_PER_SLICE_AT_512))
    assert batching.choose_batch_size(Fake())[0] == 3  # half the free memory
    monkeypatch.setattr(batching, "_free_memory_bytes", lambda device, segmenter=None: 10**14)
    assert batching.choose_batch_size(Fake())[0] == batching.MAX_BATCH["cpu"]
    Fake.device = "cuda:0"
    assert batching.choose_batch_size(Fake())[0] == batching.MAX_BATCH["cuda"]
    monkeypatch.setattr(batching, "_free_memory_bytes", lambda device, segmenter=None: 0)
    assert batching.choose_batch_size(Fake()) [0] == 1
    assert batching.choose_batch_size(Fake(), 5) == (5, "--batch-size given")
    with pytest.raises(UserError, match="--batch-size must be at least 1"):
        batching.choose_batch_size(Fake(), 0)


def test_cancel_stops_between_batches_and_leaves_nothing(sphere_case, tmp_path):
    path, _, _ = sphere_case
    cancel = threading.Event()
    stub = ThresholdSegmenter(on_call=lambda n: cancel.set())
    with pytest.raises(Cancelled):
        run_volume(path, tmp_path / "out", stub, VolumeRequest(prompt="tumor", batch_size=2), cancel=cancel)
    assert len(stub.batch_sizes) == 1  # the batch in flight finished; no further batch started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sphere.nrrd"]  # no output, no staging folder


def test_progress_reports_stages_in_order_up_to_done(sphere_case, tmp_path):
    path, _, _ = sphere_case
    events = []
    run_volume(path, tmp_path / "out", ThresholdSegmenter(), VolumeRequest(prompt="tumor", batch_size=3), progress=events.append)
    fractions = [event.fraction for event in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert [e.stage for e in events] == ["read"] + ["segment"] * 4 + ["consolidate", "done"]
    assert events[2].message == "6/10 slices" and events[2].eta_s is not None


def test_an_existing_output_folder_keeps_other_files_and_gets_ours_replaced(sphere_case, tmp_path):
    path, _, _ = sphere_case
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "labels.nrrd").write_text("stale")
    result = run_volume(path, out, ThresholdSegmenter(), VolumeRequest(prompt="tumor", params=PROMPT))
    assert sorted(p.name for p in out.iterdir()) == ["labels.nrrd", "lesions.csv", "notes.txt", "provenance.json", "score.nrrd"]
    assert read(result.files["labels"])[1].any()


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nii", ".mhd", ".nhdr"])
def test_nifti_and_metaimage_inputs_keep_their_geometry(tmp_path, suffix):
    image, sphere = sphere_volume(noise_hu=10)
    path = write(image, tmp_path / f"sphere{suffix}")
    stored = sitk.ReadImage(path)  # NIfTI stores the direction in float32: compare with what was read back
    result = run_volume(path, tmp_path / "out", ThresholdSegmenter(), VolumeRequest(prompt="tumor", params=PROMPT))
    labels_image, labels = read(result.files["labels"])
    assert same_geometry(labels_image, stored)
    np.testing.assert_array_equal(labels > 0, sphere)


def test_a_dicom_series_folder_is_read_as_one_volume(tmp_path):
    image, sphere = sphere_volume(noise_hu=10, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    folder = tmp_path / "series"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetSize()[2]):
        plane = image[:, :, k]
        origin = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in [("0008|0060", "CT"), ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"),
                           ("0020|000e", "1.2.826.0.1.3680043.2.1125.2"), ("0020|0013", str(k + 1)),
                           ("0020|0032", "\\".join(f"{v:.6f}" for v in origin)),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0028|0030", f"{SPACING[1]}\\{SPACING[0]}"),
                           ("0018|0050", str(SPACING[2]))]:
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(plane)
    result = run_volume(folder, tmp_path / "out", ThresholdSegmenter(), VolumeRequest(prompt="tumor", params=PROMPT))
    labels_image, labels = read(result.files["labels"])
    assert labels_image.GetSize() == image.GetSize()
    np.testing.assert_allclose(labels_image.GetSpacing(), SPACING, atol=1e-4)
    np.testing.assert_allclose(labels_image.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_array_equal(labels > 0, sphere)


def test_more_lesions_than_uint16_labels_hold_is_a_user_error():
    from ZeroShotDiffusionSegLib.volume.consolidation import number_lesions

    speckle = np.zeros((2, 182, 362), dtype=bool)
    speckle[0, ::2, ::2] = True  # 91 * 181 = 16471 voxels, none face-connected to another
    speckle[1, 1::2, 1::2] = True  # shifted, so no voxel touches one in the neighbouring slice
    speckle = np.concatenate([speckle, speckle], axis=0)  # 4 slices: 65884 one-voxel components
    with pytest.raises(UserError, match=r"65884 separate lesions found, more than labels.nrrd can number \(65535\); raise --min-volume"):
        number_lesions(speckle, 1.0)
    labels, dropped = number_lesions(speckle, 1.0, min_volume_mm3=2.0)
    assert dropped == 65884 and not labels.any()


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
def test_detached_header_checksum_covers_exactly_the_named_data_file(tmp_path, suffix):
    from ZeroShotDiffusionSegLib.volume.io import detached_data_files, input_sha256

    image, _ = sphere_volume(noise_hu=10)
    header = Path(write(image, tmp_path / f"sphere{suffix}"))
    named = detached_data_files(header)
    assert len(named) == 1 and named[0].is_file() and named[0] != header
    before = input_sha256(header)
    (tmp_path / "sphere.nii.gz").write_bytes(b"an unrelated file with the same stem")
    assert input_sha256(header) == before
    named[0].write_bytes(named[0].read_bytes()[:-1] + b"\x01")  # one voxel byte changed
    assert input_sha256(header) != before
