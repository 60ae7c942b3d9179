"""Slicer RAS / IJKToRAS <-> ITK LPS conversions, on oblique geometry."""

import numpy as np
import pytest
import SimpleITK as sitk

from ZeroShotDiffusionSegLib.slicer.geometry import (
    apply_geometry_to_sitk_image, geometries_match, geometry_from_ijk_to_ras, geometry_of_sitk_image,
    ijk_to_ras_matrix, lps_point_to_ras, lps_to_ras, make_geometry, ras_point_to_lps, ras_to_lps)


def rotation(axis, degrees):
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


# Oblique in all three axes, with one flipped (left-handed) axis as some scanners write.
OBLIQUE = rotation(0, 17) @ rotation(1, -33) @ rotation(2, 71) @ np.diag([1.0, -1.0, 1.0])
ITK_LPS = make_geometry((-120.37, 84.125, -33.3), (0.703125, 0.81, 2.5), OBLIQUE, "LPS")


def test_lps_ras_roundtrip_is_bitwise_exact():
    ras = lps_to_ras(ITK_LPS)
    assert ras.frame == "RAS"
    assert ras.origin == (120.37, -84.125, -33.3)
    assert ras_to_lps(ras) == ITK_LPS
    assert lps_to_ras(ras_to_lps(ras)) == ras


def test_ras_direction_flips_first_two_world_rows():
    ras = lps_to_ras(ITK_LPS)
    expected = np.diag([-1.0, -1.0, 1.0]) @ OBLIQUE
    assert np.array_equal(ras.direction_matrix(), expected)
    assert ras.spacing == ITK_LPS.spacing


def test_points_map_the_same_voxel_in_both_frames():
    ras = lps_to_ras(ITK_LPS)
    for ijk in [(0, 0, 0), (10, 3, 7), (511, 511, 99)]:
        lps_point = ITK_LPS.index_to_world(ijk)
        assert np.allclose(ras.index_to_world(ijk), lps_point_to_ras(lps_point), atol=1e-9)
        assert np.allclose(ras.world_to_index(lps_point_to_ras(lps_point)), ijk)
    assert ras_point_to_lps(lps_point_to_ras((1.5, -2.25, 3.0))) == (1.5, -2.25, 3.0)


def test_ijk_to_ras_matrix_matches_index_to_world_and_inverts():
    ras = lps_to_ras(ITK_LPS)
    matrix = ijk_to_ras_matrix(ras)
    ijk = np.array([12.0, 5.0, 3.0, 1.0])
    assert np.allclose((matrix @ ijk)[:3], ras.index_to_world(ijk[:3]), atol=1e-9)
    back = geometry_from_ijk_to_ras(matrix)
    assert np.allclose(back.spacing, ras.spacing, rtol=0, atol=1e-12)
    assert np.allclose(back.direction_matrix(), ras.direction_matrix(), rtol=0, atol=1e-12)
    assert back.origin == ras.origin
    assert np.allclose(ijk_to_ras_matrix(back), matrix, rtol=0, atol=1e-12)
    # An LPS geometry is converted first, so the matrix is always Slicer's RAS one.
    assert np.array_equal(ijk_to_ras_matrix(ITK_LPS), matrix)


def test_sitk_image_roundtrip_through_slicer_matrix():
    image = sitk.Image(4, 5, 6, sitk.sitkUInt8)
    apply_geometry_to_sitk_image(image, ITK_LPS)
    read = geometry_of_sitk_image(image)
    assert np.allclose(read.direction_matrix(), OBLIQUE, atol=1e-12)
    via_slicer = geometry_from_ijk_to_ras(ijk_to_ras_matrix(read))
    copy = sitk.Image(4, 5, 6, sitk.sitkUInt8)
    apply_geometry_to_sitk_image(copy, via_slicer)  # a RAS geometry is converted back to LPS
    assert np.allclose(copy.GetOrigin(), image.GetOrigin(), atol=1e-12)
    assert np.allclose(copy.GetDirection(), image.GetDirection(), atol=1e-12)
    assert np.allclose(copy.TransformIndexToPhysicalPoint((3, 4, 5)), image.TransformIndexToPhysicalPoint((3, 4, 5)))


def test_geometries_match_across_frames_and_detects_a_shift():
    ras = lps_to_ras(ITK_LPS)
    assert geometries_match(ras, ITK_LPS)
    shifted = make_geometry(np.add(ITK_LPS.origin, (0, 0, 0.5)), ITK_LPS.spacing, ITK_LPS.direction, "LPS")
    assert not geometries_match(ras, shifted)
    flipped = make_geometry(ITK_LPS.origin, ITK_LPS.spacing, OBLIQUE @ np.diag([1.0, 1.0, -1.0]), "LPS")
    assert not geometries_match(ITK_LPS, flipped)


def test_invalid_geometry_is_refused():
    with pytest.raises(ValueError):
        make_geometry((0, 0, 0), (1, 0, 1), np.eye(3))
    with pytest.raises(ValueError):
        make_geometry((0, 0, 0), (1, 1, 1), np.eye(3), "XYZ")
    with pytest.raises(ValueError):
        ras_to_lps(ITK_LPS)
