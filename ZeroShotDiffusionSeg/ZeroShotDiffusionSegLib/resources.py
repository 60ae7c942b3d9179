"""Where the library finds its data files (presets, icons, terminology).

The Slicer module layout keeps data in ``ZeroShotDiffusionSeg/Resources`` next to the
``ZeroShotDiffusionSegLib`` package, so the CLI, the worker, the server and the Slicer
module all resolve it relative to this file; nobody else should hard-code the path.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError


def resources_dir() -> Path:
    """``ZeroShotDiffusionSeg/Resources`` (this file is ``ZeroShotDiffusionSeg/ZeroShotDiffusionSegLib/resources.py``)."""
    return Path(__file__).resolve().parents[1] / "Resources"


def resource_path(*parts: str) -> Path:
    """A file under Resources, e.g. ``resource_path("Presets", "ct_windows.json")``; a clear error if it is missing."""
    path = resources_dir().joinpath(*parts)
    if not path.exists():
        raise UserError(
            f"missing resource file {path}: reinstall ZeroShotDiffusionSeg from a full source checkout (pip install -e .)"
        )
    return path
