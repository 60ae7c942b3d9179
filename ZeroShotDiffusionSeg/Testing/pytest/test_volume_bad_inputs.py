"""Every bad input gets one clear line (a UserError), and nothing is written: no output folder, no staging folder."""

import numpy as np
import pytest
import SimpleITK as sitk

from test_volume_fixtures import ThresholdSegmenter, sphere_volume, write
from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.volume import VolumeRequest, run_volume
from ZeroShotDiffusionSegLib.volume.pipeline import check_request


def image_from(array, **kwargs):
    image = sitk.GetImageFromArray(array, **kwargs)
    image.SetSpacing([0.8, 0.9, 2.5][: image.GetDimension()] + [1.0] * max(0, image.GetDimension() - 3))
    return image


def assert_refused(tmp_path, input_path, pattern, request=None, out_dir=None):
    """Both the pre-flight check and the run refuse with the message, and leave tmp_path as it was."""
    before = sorted(p.name for p in tmp_path.iterdir())
    request = request or VolumeRequest(prompt="tumor")
    out_dir = out_dir or tmp_path / "out"
    for attempt in (check_request, lambda *a: run_volume(a[0], a[1], ThresholdSegmenter(), a[2])):
        with pytest.raises(UserError, match=pattern) as caught:
            attempt(input_path, out_dir, request)
        assert "\n" not in str(caught.value)
        assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_four_d_image(tmp_path):
    path = write(image_from(np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32), isVector=False), tmp_path / "4d.nrrd")
    assert_refused(tmp_path, path, r"is a 4-D image \(size \(8, 8, 3, 2\)\); extract one 3-D volume")


def test_vector_image(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, size=(4, 8, 8, 3)).astype(np.uint8)
    path = write(image_from(rgb, isVector=True), tmp_path / "rgb.nrrd")
    assert_refused(tmp_path, path, r"is a vector/colour image with 3 components per voxel; give a scalar")


def test_two_d_image_given_to_the_volume_pipeline(tmp_path):
    path = write(image_from(np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32)), tmp_path / "flat.nrrd")
    assert_refused(tmp_path, path, r"is a 2-D image; the volume pipeline needs a 3-D volume")


def test_constant_volume(tmp_path):
    path = write(image_from(np.full((4, 8, 8), 7, dtype=np.int16)), tmp_path / "constant.nrrd")
    assert_refused(tmp_path, path, r"is constant \(every voxel has the same value\); there is nothing to segment")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_values(tmp_path, bad_value):
    array = np.random.default_rng(0).normal(size=(4, 8, 8)).astype(np.float32)
    array[1, 2, 3] = bad_value
    array[2, 2, 3] = bad_value
    path = write(image_from(array), tmp_path / "nan.nrrd")
    assert_refused(tmp_path, path, r"contains 2 NaN or infinite voxel values")


@pytest.mark.parametrize("directions", ["(0,0,0) (0,1,0) (0,0,1)", "(0.8,0,0) (0,0,0) (0,0,2.5)"])
def test_zero_spacing(tmp_path, directions):
    header = ("NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: 2 2 2\n"
              f"space directions: {directions}\nendian: little\nencoding: raw\nspace origin: (0,0,0)\n\n")
    path = tmp_path / "zero.nrrd"
    path.write_bytes(header.encode() + np.arange(8, dtype=np.float32).tobytes())
    assert_refused(tmp_path, path, r"has zero or negative voxel spacing \(.*0\.0.*\); every spacing must be positive")


@pytest.mark.parametrize("name, header", [
    ("negative.nrrd", "NRRD0004\ntype: float\ndimension: 3\nsizes: 2 2 2\nspacings: -1 1 1\nendian: little\nencoding: raw\n\n"),
    ("negative.mha", "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementSpacing = 1 -0.5 1\n"
                     "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n"),
])
def test_negative_spacing(tmp_path, name, header):
    path = tmp_path / name
    path.write_bytes(header.encode() + np.arange(8, dtype=np.float32).tobytes())
    assert_refused(tmp_path, path, r"has zero or negative voxel spacing \(.*-.*\); every spacing must be positive")


def test_a_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.nrrd"
    path.write_text("this is not an image\n")
    assert_refused(tmp_path, path, r"notes.nrrd is not a readable image \((?!.*(ERROR|0x[0-9a-f]))")  # no ITK noise


def test_a_missing_input_and_a_folder_without_dicom(tmp_path):
    assert_refused(tmp_path, tmp_path / "nowhere.nrrd", r"input not found: .*nowhere.nrrd")
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    assert_refused(tmp_path, empty, r"is a folder without a DICOM series")


def test_an_unwritable_output_folder(tmp_path):
    image, _ = sphere_volume(noise_hu=10)
    path = write(image, tmp_path / "ok.nrrd")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert_refused(tmp_path, path, r"cannot write the output folder .*a_file/out: .*a_file is not writable", out_dir=blocker / "out")
    assert_refused(tmp_path, path, r"output folder .*a_file exists and is not a folder", out_dir=blocker)
    # Writing is refused by the file system itself (root ignores permission bits, /proc refuses everybody).
    assert_refused(tmp_path, path, r"cannot write the output folder /proc/zsdseg-out", out_dir="/proc/zsdseg-out")


def test_roi_and_seeds_outside_the_volume(tmp_path):
    image, _ = sphere_volume(noise_hu=10)
    path = write(image, tmp_path / "ok.nrrd")
    far = VolumeRequest(prompt="tumor", roi_physical=((900, 900, 900), (950, 950, 950)), coordinate_space="LPS")
    assert_refused(tmp_path, path, r"the ROI \(900.0, 900.0, 900.0\)-\(950.0, 950.0, 950.0\) LPS lies outside the volume", far)
    voxels = VolumeRequest(prompt="tumor", roi_voxels=((100, 0, 0), (120, 10, 10)))
    assert_refused(tmp_path, path, r"the voxel ROI \(100, 0, 0\)-\(120, 10, 10\) lies outside the volume", voxels)
    seed = VolumeRequest(seeds=[(0.0, 0.0, 500.0)], coordinate_space="RAS")
    assert_refused(tmp_path, path, r"seed \(0.0, 0.0, 500.0\) RAS is outside the volume", seed)
    inside = image.TransformIndexToPhysicalPoint((2, 2, 2))
    seed_outside_roi = VolumeRequest(seeds=[inside], coordinate_space="LPS", roi_voxels=((10, 10, 3), (30, 30, 9)))
    assert_refused(tmp_path, path, r"seed .* LPS \(voxel \(2, 2, 2\)\) is outside the ROI", seed_outside_roi)


@pytest.mark.parametrize("request_, pattern", [
    (VolumeRequest(), r"a volume needs --prompt TEXT"),
    (VolumeRequest(mode="prompt", prompt="  "), r"prompt mode needs a non-empty --prompt"),
    (VolumeRequest(mode="seed", prompt="tumor"), r"seed mode needs at least one --seed-ras"),
])
def test_bad_requests(tmp_path, request_, pattern):
    image, _ = sphere_volume(noise_hu=10)
    path = write(image, tmp_path / "ok.nrrd")
    assert_refused(tmp_path, path, pattern, request_)


def test_a_volume_of_air_only_inside_the_roi(tmp_path):
    image, _ = sphere_volume(air_slices=range(2, 12), noise_hu=10)
    path = write(image, tmp_path / "air.nrrd")
    request = VolumeRequest(prompt="tumor", roi_voxels=((0, 0, 4), (47, 39, 9)))
    with pytest.raises(UserError, match="no slice inside the ROI holds anything but air or a constant value"):
        run_volume(path, tmp_path / "out", ThresholdSegmenter(), request)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["air.nrrd"]
