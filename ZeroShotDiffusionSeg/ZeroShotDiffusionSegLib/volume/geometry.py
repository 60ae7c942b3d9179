"""Coordinates: RAS <-> LPS, physical point <-> voxel index, and ROI boxes in voxel indices.

ITK (and so every file we read) is LPS; Slicer's world is RAS; the two differ by the sign of x
and y. Indices are ITK's (i, j, k) order, the reverse of numpy's (k, j, i) array order.
Each transform sits next to its inverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import UserError

Point3 = Tuple[float, float, float]
Index3 = Tuple[int, int, int]
SPACES = ("RAS", "LPS")


def ras_to_lps(point: Sequence[float]) -> Point3:
    x, y, z = (float(v) for v in point)
    return (-x, -y, z)


def lps_to_ras(point: Sequence[float]) -> Point3:
    x, y, z = (float(v) for v in point)
    return (-x, -y, z)


def _check_space(space: str) -> str:
    space = space.upper()
    if space not in SPACES:
        raise UserError(f"coordinate space must be RAS or LPS, got {space!r}")
    return space


def to_lps(point: Sequence[float], space: str) -> Point3:
    """A point stated in ``space`` (RAS or LPS) as LPS."""
    return ras_to_lps(point) if _check_space(space) == "RAS" else tuple(float(v) for v in point)


def from_lps(point: Sequence[float], space: str) -> Point3:
    """The inverse of ``to_lps``."""
    return lps_to_ras(point) if _check_space(space) == "RAS" else tuple(float(v) for v in point)


def physical_to_continuous_index(image: sitk.Image, lps_point: Sequence[float]) -> np.ndarray:
    """(i, j, k) as floats; integer values are voxel centres."""
    return np.array(image.TransformPhysicalPointToContinuousIndex([float(v) for v in lps_point]))


def continuous_index_to_physical(image: sitk.Image, index: Sequence[float]) -> Point3:
    """The inverse of ``physical_to_continuous_index``: an LPS point."""
    return tuple(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index]))


def physical_to_voxel(image: sitk.Image, lps_point: Sequence[float]) -> Index3:
    """The voxel whose centre is nearest to the point (may lie outside the volume; see ``contains``)."""
    # floor(x + 0.5) rather than round(): numpy rounds halves to even, which would make the choice
    # depend on the parity of the index.
    return tuple(int(v) for v in np.floor(physical_to_continuous_index(image, lps_point) + 0.5))


def voxel_to_physical(image: sitk.Image, index: Sequence[int]) -> Point3:
    """The inverse of ``physical_to_voxel``: the voxel centre, LPS."""
    return tuple(image.TransformIndexToPhysicalPoint([int(v) for v in index]))


def contains(image: sitk.Image, index: Sequence[int]) -> bool:
    return all(0 <= int(v) < size for v, size in zip(index, image.GetSize()))


def physical_extent(image: sitk.Image, space: str) -> Tuple[Point3, Point3]:
    """Axis-aligned bounds (in ``space``) of the volume's voxel centres, for error messages."""
    size = image.GetSize()
    corners = [
        from_lps(voxel_to_physical(image, (i, j, k)), space)
        for i in (0, size[0] - 1)
        for j in (0, size[1] - 1)
        for k in (0, size[2] - 1)
    ]
    array = np.array(corners)
    return tuple(array.min(axis=0)), tuple(array.max(axis=0))


def _format_point(point: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in point) + ")"


@dataclass(frozen=True)
class IndexBox:
    """A box of voxels, (i, j, k) bounds inclusive at both ends."""

    lower: Index3
    upper: Index3

    def numpy_slices(self) -> Tuple[slice, slice, slice]:
        """The box as numpy (k, j, i) slices."""
        return tuple(slice(self.lower[a], self.upper[a] + 1) for a in (2, 1, 0))

    def contains(self, index: Sequence[int]) -> bool:
        return all(lo <= int(v) <= hi for v, lo, hi in zip(index, self.lower, self.upper))


def whole_volume_box(image: sitk.Image) -> IndexBox:
    return IndexBox((0, 0, 0), tuple(size - 1 for size in image.GetSize()))


def _clip_to_volume(image: sitk.Image, lower: np.ndarray, upper: np.ndarray, described: str, volume_note: str) -> IndexBox:
    size = np.array(image.GetSize())
    if np.any(upper < 0) or np.any(lower > size - 1) or np.any(lower > upper):
        raise UserError(f"{described} lies outside the volume ({volume_note})")
    lower = np.clip(lower, 0, size - 1)
    upper = np.clip(upper, 0, size - 1)
    return IndexBox(tuple(int(v) for v in lower), tuple(int(v) for v in upper))


def voxel_roi_box(image: sitk.Image, corner_a: Sequence[int], corner_b: Sequence[int]) -> IndexBox:
    """A voxel ROI given by two opposite corners (inclusive), clipped to the volume."""
    a, b = np.array(corner_a, dtype=int), np.array(corner_b, dtype=int)
    described = f"the voxel ROI {tuple(int(v) for v in a)}-{tuple(int(v) for v in b)}"
    size_note = "size " + "x".join(str(v) for v in image.GetSize()) + " voxels"
    return _clip_to_volume(image, np.minimum(a, b), np.maximum(a, b), described, size_note)


def physical_roi_box(image: sitk.Image, corner_a: Sequence[float], corner_b: Sequence[float], space: str) -> IndexBox:
    """The voxels whose centres lie in a physical box (axis-aligned in ``space``), clipped to the volume.

    For an oblique volume the box is a parallelepiped in index space; we keep its bounding box of
    voxels. Along an axis where the box is thinner than a voxel, the nearest voxel is kept.
    """
    a, b = np.array(corner_a, dtype=float), np.array(corner_b, dtype=float)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    corners = [(x, y, z) for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    indices = np.array([physical_to_continuous_index(image, to_lps(c, space)) for c in corners])
    first, last = indices.min(axis=0), indices.max(axis=0)
    tolerance = 1e-6  # a box edge exactly on a voxel centre includes that voxel despite float noise
    lower, upper = np.ceil(first - tolerance), np.floor(last + tolerance)
    thin = lower > upper
    nearest = np.floor((first + last) / 2 + 0.5)
    lower, upper = np.where(thin, nearest, lower).astype(int), np.where(thin, nearest, upper).astype(int)
    extent = physical_extent(image, space)
    described = f"the ROI {_format_point(lo)}-{_format_point(hi)} {space}"
    extent_note = f"which spans {_format_point(extent[0])}-{_format_point(extent[1])} {space}"
    return _clip_to_volume(image, lower, upper, described, extent_note)


def seed_voxel(image: sitk.Image, point: Sequence[float], space: str) -> Index3:
    """The voxel under a physical seed point; a clear error when it is outside the volume."""
    index = physical_to_voxel(image, to_lps(point, space))
    if not contains(image, index):
        extent = physical_extent(image, space)
        raise UserError(
            f"seed {_format_point(point)} {space} is outside the volume "
            f"(which spans {_format_point(extent[0])}-{_format_point(extent[1])} {space})"
        )
    return index
