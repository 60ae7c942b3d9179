"""Which axis to slice along, and the one mapping between volume voxels and 2-D slice pixels.

Slices are plain numpy sub-arrays: no flips, no transposes. A slice along ITK axis ``a`` is the
(k, j, i) array with numpy axis ``2 - a`` removed, cropped to the ROI box in-plane. Its rows are the
remaining ITK axis with the larger number, its columns the smaller one. Every function that goes
volume -> slice has its inverse right after it (the lesson of VoxTell's RAS/LPS fix:
undo a reorientation with the same code that applied it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from ..errors import UserError
from .geometry import Index3, IndexBox

INDEX_AXES = {"i": 0, "j": 1, "k": 2}
# Row of the LPS direction matrix that measures closeness to each patient axis.
PATIENT_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
AXIS_CHOICES = ("auto",) + tuple(PATIENT_AXES) + tuple(INDEX_AXES)


def choose_slice_axis(direction: Sequence[float], requested: str = "auto") -> int:
    """The ITK index axis (0=i, 1=j, 2=k) to slice along.

    ``auto`` = ``axial``: the index axis whose direction is closest to the patient's
    superior-inferior axis, so slices are as close to axial as the acquisition allows.
    """
    requested = (requested or "auto").lower()
    if requested in INDEX_AXES:
        return INDEX_AXES[requested]
    if requested == "auto":
        requested = "axial"
    if requested not in PATIENT_AXES:
        raise UserError(f"--axis must be one of {', '.join(AXIS_CHOICES)}; got {requested!r}")
    columns = np.asarray(direction, dtype=float).reshape(3, 3)  # column a = LPS direction of index axis a
    return int(np.argmax(np.abs(columns[PATIENT_AXES[requested], :])))


def _numpy_axis(itk_axis: int) -> int:
    return 2 - itk_axis


@dataclass(frozen=True)
class SlicePlan:
    """Slicing along ``axis`` inside ``box``; maps volume <-> slices and voxels <-> slice pixels."""

    axis: int  # ITK index axis
    box: IndexBox

    @property
    def in_plane_axes(self) -> Tuple[int, int]:
        """(row axis, column axis) in ITK index terms."""
        row_axis, column_axis = sorted((a for a in range(3) if a != self.axis), reverse=True)
        return row_axis, column_axis

    def slice_indices(self) -> List[int]:
        return list(range(self.box.lower[self.axis], self.box.upper[self.axis] + 1))

    def _in_plane_slices(self) -> Tuple[slice, slice]:
        return tuple(slice(self.box.lower[a], self.box.upper[a] + 1) for a in self.in_plane_axes)

    def extract(self, volume: np.ndarray, index: int) -> np.ndarray:
        """The 2-D slice ``index`` of a (k, j, i) volume, cropped to the box (a copy)."""
        plane = np.take(volume, index, axis=_numpy_axis(self.axis))
        rows, columns = self._in_plane_slices()
        return np.ascontiguousarray(plane[rows, columns])

    def insert(self, volume: np.ndarray, index: int, plane: np.ndarray) -> None:
        """The inverse of ``extract``: write a slice back into the volume, in place."""
        rows, columns = self._in_plane_slices()
        target = [slice(None)] * 3
        target[_numpy_axis(self.axis)] = index
        volume[tuple(target)][rows, columns] = plane

    def pixel_of_voxel(self, voxel: Index3) -> Tuple[int, Tuple[int, int]]:
        """(slice index, (x = column, y = row) in the cropped slice) of an (i, j, k) voxel."""
        row_axis, column_axis = self.in_plane_axes
        x = int(voxel[column_axis]) - self.box.lower[column_axis]
        y = int(voxel[row_axis]) - self.box.lower[row_axis]
        return int(voxel[self.axis]), (x, y)

    def voxel_of_pixel(self, index: int, pixel: Tuple[int, int]) -> Index3:
        """The inverse of ``pixel_of_voxel``."""
        row_axis, column_axis = self.in_plane_axes
        voxel = [0, 0, 0]
        voxel[self.axis] = int(index)
        voxel[column_axis] = int(pixel[0]) + self.box.lower[column_axis]
        voxel[row_axis] = int(pixel[1]) + self.box.lower[row_axis]
        return tuple(voxel)
