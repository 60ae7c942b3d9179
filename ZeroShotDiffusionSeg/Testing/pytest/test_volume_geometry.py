"""Coordinates: RAS/LPS, physical <-> voxel, ROI boxes, slice axis choice and the slice <-> volume mapping."""

import numpy as np
import pytest

from test_volume_fixtures import blank_image, oblique_direction, voxel_centres_lps
from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.volume import geometry
from ZeroShotDiffusionSegLib.volume.slicing import SlicePlan, choose_slice_axis


def test_ras_and_lps_differ_by_the_sign_of_x_and_y_and_are_inverse():
    assert geometry.ras_to_lps((1.5, -2.0, 3.0)) == (-1.5, 2.0, 3.0)
    assert geometry.lps_to_ras(geometry.ras_to_lps((7.0, 8.0, 9.0))) == (7.0, 8.0, 9.0)
    assert geometry.from_lps(geometry.to_lps((1, 2, 3), "RAS"), "RAS") == (1.0, 2.0, 3.0)
    assert geometry.to_lps((1, 2, 3), "lps") == (1.0, 2.0, 3.0)
    with pytest.raises(UserError, match="RAS or LPS"):
        geometry.to_lps((1, 2, 3), "XYZ")


def test_voxel_centres_round_trip_through_physical_space_on_an_oblique_grid():
    image = blank_image()
    for voxel in [(0, 0, 0), (47, 39, 11), (13, 7, 5)]:
        lps = geometry.voxel_to_physical(image, voxel)
        assert geometry.physical_to_voxel(image, lps) == voxel
        # A point a third of a voxel away still maps to the same voxel.
        nudged = geometry.continuous_index_to_physical(image, np.array(voxel) + 0.33)
        assert geometry.physical_to_voxel(image, nudged) == voxel
    expected = np.array(image.GetOrigin()) + np.array(oblique_direction()).reshape(3, 3) @ (np.array([13, 7, 5]) * image.GetSpacing())
    np.testing.assert_allclose(geometry.voxel_to_physical(image, (13, 7, 5)), expected, atol=1e-9)


def test_seed_in_ras_and_in_lps_lands_on_the_same_voxel():
    image = blank_image()
    lps = geometry.voxel_to_physical(image, (30, 12, 4))
    assert geometry.seed_voxel(image, lps, "LPS") == (30, 12, 4)
    assert geometry.seed_voxel(image, geometry.lps_to_ras(lps), "RAS") == (30, 12, 4)
    with pytest.raises(UserError, match=r"seed \(.*\) LPS is outside the volume \(which spans"):
        geometry.seed_voxel(image, (1000.0, 0.0, 0.0), "LPS")


def test_physical_roi_keeps_the_voxels_whose_centres_are_inside_the_box():
    image = blank_image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))  # axis-aligned: the box is exact
    low = geometry.voxel_to_physical(image, (10, 5, 2))
    high = geometry.voxel_to_physical(image, (20, 15, 6))
    box = geometry.physical_roi_box(image, low, high, "LPS")
    assert (box.lower, box.upper) == ((10, 5, 2), (20, 15, 6))
    # The same box stated in RAS, corners swapped.
    box_ras = geometry.physical_roi_box(image, geometry.lps_to_ras(high), geometry.lps_to_ras(low), "RAS")
    assert box_ras == box
    # A box reaching past the volume is clipped to it.
    far = geometry.voxel_to_physical(image, (100, 100, 100))
    assert geometry.physical_roi_box(image, low, far, "LPS").upper == (47, 39, 11)


def test_oblique_physical_roi_covers_every_voxel_centre_inside_the_box_and_little_more():
    image = blank_image()
    centre = np.array(geometry.voxel_to_physical(image, (24, 20, 6)))
    box = geometry.physical_roi_box(image, centre - 4.0, centre + 4.0, "LPS")
    centres = voxel_centres_lps(image)  # (k, j, i, 3)
    inside_k, inside_j, inside_i = np.nonzero(np.all(np.abs(centres - centre) <= 4.0, axis=-1))
    assert inside_i.size > 0
    assert all(lo <= v for lo, v in zip(box.lower, (inside_i.min(), inside_j.min(), inside_k.min())))
    assert all(hi >= v for hi, v in zip(box.upper, (inside_i.max(), inside_j.max(), inside_k.max())))
    # The bounding box of the rotated 8 mm cube: at most its extent in voxels (+1 for rounding) per axis.
    extent_voxels = 8.0 * np.abs(np.array(image.GetDirection()).reshape(3, 3).T).sum(axis=1) / np.array(image.GetSpacing())
    assert np.all(np.array(box.upper) - np.array(box.lower) <= np.ceil(extent_voxels) + 1)


def test_voxel_roi_is_inclusive_and_refused_outside_the_volume():
    image = blank_image()
    box = geometry.voxel_roi_box(image, (30, 10, 8), (5, 2, 3))
    assert (box.lower, box.upper) == ((5, 2, 3), (30, 10, 8))
    assert box.numpy_slices() == (slice(3, 9), slice(2, 11), slice(5, 31))
    with pytest.raises(UserError, match=r"the voxel ROI \(60, 0, 0\)-\(70, 5, 5\) lies outside the volume \(size 48x40x12 voxels\)"):
        geometry.voxel_roi_box(image, (60, 0, 0), (70, 5, 5))


def test_physical_roi_outside_the_volume_is_refused_with_the_volume_extent():
    image = blank_image()
    with pytest.raises(UserError, match=r"the ROI \(500.0, 500.0, 500.0\)-\(510.0, 510.0, 510.0\) RAS lies outside the volume \(which spans \(.*\) RAS\)"):
        geometry.physical_roi_box(image, (500, 500, 500), (510, 510, 510), "RAS")


@pytest.mark.parametrize("columns, axial, coronal, sagittal", [
    ([(1, 0, 0), (0, 1, 0), (0, 0, 1)], 2, 1, 0),   # axial acquisition
    ([(1, 0, 0), (0, 0, -1), (0, 1, 0)], 1, 2, 0),  # coronal acquisition: j runs inferior
    ([(0, 1, 0), (0, 0, -1), (1, 0, 0)], 1, 0, 2),  # sagittal acquisition: k runs left-right
])
def test_slice_axis_is_the_index_axis_closest_to_the_patient_axis(columns, axial, coronal, sagittal):
    direction = tuple(np.array(columns, dtype=float).T.reshape(-1))  # ITK: column a = direction of index axis a
    assert choose_slice_axis(direction) == axial
    assert choose_slice_axis(direction, "axial") == axial
    assert choose_slice_axis(direction, "coronal") == coronal
    assert choose_slice_axis(direction, "sagittal") == sagittal
    assert choose_slice_axis(direction, "j") == 1


def test_oblique_direction_still_picks_k_for_axial():
    assert choose_slice_axis(oblique_direction(20, 10)) == 2
    with pytest.raises(UserError, match="--axis must be one of"):
        choose_slice_axis(oblique_direction(), "diagonal")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_extract_and_insert_are_inverse_and_pixels_map_back_to_voxels(axis):
    volume = np.arange(12 * 40 * 48, dtype=np.float64).reshape(12, 40, 48)
    box = geometry.IndexBox((3, 4, 2), (40, 30, 9))
    plan = SlicePlan(axis, box)
    rebuilt = np.zeros_like(volume)
    for index in plan.slice_indices():
        plane = plan.extract(volume, index)
        plan.insert(rebuilt, index, plane)
    inside = box.numpy_slices()
    np.testing.assert_array_equal(rebuilt[inside], volume[inside])
    assert rebuilt.sum() == volume[inside].sum()  # nothing written outside the box
    voxel = (17, 22, 6)
    index, (x, y) = plan.pixel_of_voxel(voxel)
    assert plan.extract(volume, index)[y, x] == volume[voxel[2], voxel[1], voxel[0]]
    assert plan.voxel_of_pixel(index, (x, y)) == voxel
