"""Where the library finds its data files (presets, icons, terminology).

The Slicer module layout keeps data in ``ZeroShotDiffusionSeg/Resources`` next to the
``ZeroShotDiffusionSegLib`` package, so the CLI, the worker, the server and the Slicer
module all resolve it relative to this file; nobody else should hard-code the path.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError


def resources_dir() -> Path:
    """``ZeroShotDiffusionSeg/Resources`` in a source checkout or Slicer; inside the package in a wheel."""
    beside_package = Path(__file__).resolve().parents[1] / "Resources"
    in_wheel = Path(__file__).resolve().parent / "Resources"
    return beside_package if beside_package.is_dir() else in_wheel


def resource_path(*parts: str) -> Path:
    """A file under Resources, e.g. ``resource_path("Presets", "organs.json")``; a clear error if it is missing."""
    path = resources_dir().joinpath(*parts)
    if not path.exists():
        raise UserError(
            f"missing resource file {path}: reinstall ZeroShotDiffusionSeg from a full source checkout"
        )
    return path
