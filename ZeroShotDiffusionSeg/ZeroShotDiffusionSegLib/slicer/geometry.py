"""Volume geometry between Slicer (RAS world, IJKToRAS 4x4) and ITK/NRRD files (LPS).

Slicer stores a volume's geometry as origin, spacing and IJK-to-RAS direction columns;
ITK (SimpleITK, NRRD/NIfTI readers) stores the same as origin, spacing and direction in
LPS. The two frames differ by a sign flip of the first two world axes, so the
conversion below is exact (no rounding) in both directions. The 4x4 matrix form mixes
direction and spacing and is recovered by column norms, exact to rounding.

Each transform sits next to its inverse, so a change to one is seen beside the other
(the RAS/LPS flip bug VoxTell fixed in commit b08cab7 came from two separate code paths).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

# Points flip the same way; the volume pipeline owns that pair.
from ..volume.geometry import lps_to_ras as lps_point_to_ras
from ..volume.geometry import ras_to_lps as ras_point_to_lps

# diag(-1, -1, 1): maps RAS to LPS and back (it is its own inverse).
_RAS_LPS_FLIP = np.array([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """Origin, spacing and direction columns of a 3-D image in one world frame.

    ``direction[:, j]`` is the unit world vector of voxel index axis j (i, j, k), so a
    voxel index ``ijk`` lies at ``origin + direction @ (spacing * ijk)``.
    ``frame`` is "RAS" (Slicer) or "LPS" (ITK files).
    """

    origin: Tuple[float, float, float]
    spacing: Tuple[float, float, float]
    direction: Tuple[Tuple[float, float, float], ...]  # 3 rows of a 3x3 matrix
    frame: str = "RAS"

    def direction_matrix(self) -> np.ndarray:
        return np.array(self.direction, dtype=float).reshape(3, 3)

    def index_to_world(self, ijk: Sequence[float]) -> np.ndarray:
        scaled = np.asarray(self.spacing, dtype=float) * np.asarray(ijk, dtype=float)
        return np.asarray(self.origin, dtype=float) + self.direction_matrix() @ scaled

    def world_to_index(self, point: Sequence[float]) -> np.ndarray:
        offset = np.asarray(point, dtype=float) - np.asarray(self.origin, dtype=float)
        return np.linalg.solve(self.direction_matrix(), offset) / np.asarray(self.spacing, dtype=float)


def _tuple3(values) -> Tuple[float, float, float]:
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def _rows(matrix: np.ndarray) -> Tuple[Tuple[float, float, float], ...]:
    return tuple(_tuple3(row) for row in np.asarray(matrix, dtype=float).reshape(3, 3))


def make_geometry(origin, spacing, direction, frame: str = "RAS") -> Geometry:
    """Build a Geometry from any sequences; ``direction`` is 9 values row-major or a 3x3."""
    if frame not in ("RAS", "LPS"):
        raise ValueError(f"frame must be RAS or LPS, got {frame!r}")
    spacing = _tuple3(spacing)
    if min(spacing) <= 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    return Geometry(_tuple3(origin), spacing, _rows(np.asarray(direction, dtype=float)), frame)


# --- RAS geometry <-> LPS geometry (exact: only signs change) --------------------

def ras_to_lps(geometry: Geometry) -> Geometry:
    if geometry.frame != "RAS":
        raise ValueError("expected a RAS geometry")
    direction = _RAS_LPS_FLIP[:, None] * geometry.direction_matrix()
    return Geometry(ras_point_to_lps(geometry.origin), geometry.spacing, _rows(direction), "LPS")


def lps_to_ras(geometry: Geometry) -> Geometry:
    if geometry.frame != "LPS":
        raise ValueError("expected an LPS geometry")
    direction = _RAS_LPS_FLIP[:, None] * geometry.direction_matrix()
    return Geometry(lps_point_to_ras(geometry.origin), geometry.spacing, _rows(direction), "RAS")


# --- Slicer's IJKToRAS 4x4 matrix <-> RAS geometry --------------------------------

def ijk_to_ras_matrix(geometry: Geometry) -> np.ndarray:
    """The 4x4 matrix Slicer's ``volumeNode.GetIJKToRASMatrix`` returns."""
    if geometry.frame != "RAS":
        geometry = lps_to_ras(geometry)
    matrix = np.eye(4)
    matrix[:3, :3] = geometry.direction_matrix() * np.asarray(geometry.spacing)[None, :]
    matrix[:3, 3] = geometry.origin
    return matrix


def geometry_from_ijk_to_ras(matrix) -> Geometry:
    """Inverse of ``ijk_to_ras_matrix``: spacing is the norm of each column."""
    matrix = np.asarray(matrix, dtype=float).reshape(4, 4)
    linear = matrix[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing == 0):
        raise ValueError("IJKToRAS matrix has a zero column")
    return make_geometry(matrix[:3, 3], spacing, linear / spacing[None, :], "RAS")


# --- ITK image (SimpleITK) <-> LPS geometry ----------------------------------------

def geometry_of_sitk_image(image) -> Geometry:
    """The LPS geometry of a SimpleITK image (3-D)."""
    return make_geometry(image.GetOrigin(), image.GetSpacing(), image.GetDirection(), "LPS")


def apply_geometry_to_sitk_image(image, geometry: Geometry) -> None:
    """Set a SimpleITK image's origin/spacing/direction (inverse of ``geometry_of_sitk_image``)."""
    if geometry.frame != "LPS":
        geometry = ras_to_lps(geometry)
    image.SetOrigin(geometry.origin)
    image.SetSpacing(geometry.spacing)
    image.SetDirection(tuple(v for row in geometry.direction for v in row))


def geometries_match(a: Geometry, b: Geometry, tolerance: float = 1e-4) -> bool:
    """True when two geometries describe the same voxel grid (frames converted first).

    The tolerance is in mm for the origin and relative for spacing; it absorbs the
    text rounding of NRRD headers, not real misregistration.
    """
    if a.frame != b.frame:
        b = lps_to_ras(b) if b.frame == "LPS" else ras_to_lps(b)
    return (
        np.allclose(a.origin, b.origin, atol=tolerance)
        and np.allclose(a.spacing, b.spacing, rtol=tolerance, atol=0)
        and np.allclose(a.direction_matrix(), b.direction_matrix(), atol=tolerance)
    )


def lattices_aligned(reference, grid, tolerance: float = 1e-3) -> bool:
    """Whether every voxel centre of ``grid`` is a voxel centre of ``reference``: the same axes and spacing, and
    an origin a whole number of voxels away. Both are 4x4 image-to-world matrices in one frame; the tolerance
    is a fraction of a voxel."""
    reference, grid = np.asarray(reference, float), np.asarray(grid, float)
    to_reference_voxels = np.linalg.inv(reference) @ grid  # grid index -> reference index
    if not np.allclose(to_reference_voxels[:3, :3], np.eye(3), atol=tolerance):
        return False
    offset = to_reference_voxels[:3, 3]
    return bool(np.allclose(offset, np.round(offset), atol=tolerance))
