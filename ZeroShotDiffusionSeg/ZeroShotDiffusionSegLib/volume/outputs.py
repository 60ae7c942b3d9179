"""The output folder, written all-or-nothing, and the lesion table / provenance files in it.

Everything is written into a hidden staging folder on the same file system as the output folder
(inside it when it exists, else beside it), then moved in with renames. An error, a cancel or
Ctrl-C discards the staging folder, so a reader never sees half a result.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import uuid
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import UserError
from .consolidation import LESION_COLUMNS

OUTPUT_NAMES = {
    "labels": "labels.nrrd",
    "score": "score.nrrd",
    "lesions": "lesions.csv",
    "provenance": "provenance.json",
}
# Written only when asked for (--pseudo-healthy); not among the files a server returns by default.
OPTIONAL_OUTPUT_NAMES = {"healthy": "healthy.nrrd", "residual": "residual.nrrd"}
ALL_OUTPUT_NAMES = {**OUTPUT_NAMES, **OPTIONAL_OUTPUT_NAMES}
STAGING_PREFIX = ".zsdseg-partial-"
VERSIONED_PACKAGES = ("zeroshotdiffusionseg", "numpy", "scipy", "SimpleITK", "torch", "diffusers", "transformers")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


class StagedOutputFolder:
    """``with StagedOutputFolder(out) as staged: write to staged.path(key); staged.commit()``."""

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir).absolute()
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UserError(f"output folder {self.out_dir} exists and is not a folder")
        anchor = self.out_dir if self.out_dir.exists() else _nearest_existing(self.out_dir.parent)
        if not anchor.is_dir() or not os.access(anchor, os.W_OK | os.X_OK):
            raise UserError(f"cannot write the output folder {self.out_dir}: {anchor} is not writable")
        remove_stale_staging(anchor)
        # os.mkdir, not tempfile.mkdtemp: mkdtemp makes the folder private (0700), and when it is renamed
        # into place the user's umask should decide its permissions like for any new folder.
        self.staging = anchor / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.mkdir(self.staging)
        except OSError as error:
            raise UserError(f"cannot write the output folder {self.out_dir}: {error.strerror}") from None
        self.committed: Optional[Dict[str, Path]] = None

    def path(self, key: str) -> Path:
        return self.staging / ALL_OUTPUT_NAMES[key]

    def commit(self) -> Dict[str, Path]:
        """Move the staged files into the output folder; returns key -> final path."""
        # provenance.json last: a folder whose provenance names a request holds that request's other files,
        # even after a kill -9 between two renames (a resumed batch trusts it).
        keys = sorted((key for key in ALL_OUTPUT_NAMES if self.path(key).exists()), key=lambda key: key == "provenance")
        if not self.out_dir.exists():
            self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        if not self.out_dir.exists() and self.staging.parent == self.out_dir.parent:
            os.rename(self.staging, self.out_dir)  # one atomic step
        else:
            self.out_dir.mkdir(exist_ok=True)
            for key in keys:
                os.replace(self.path(key), self.out_dir / ALL_OUTPUT_NAMES[key])
            shutil.rmtree(self.staging, ignore_errors=True)
        self.committed = {key: self.out_dir / ALL_OUTPUT_NAMES[key] for key in keys}
        return self.committed

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> "StagedOutputFolder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.committed is None:
            self.discard()


def remove_stale_staging(folder: Path) -> List[Path]:
    """Remove the staging folders in ``folder`` whose run is dead (killed: its process id no longer exists).

    The process id is in the name; a live process with that id (this machine's) keeps its folder.
    """
    removed = []
    for staging in folder.glob(STAGING_PREFIX + "*"):
        pid_text = staging.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or not staging.is_dir() or staging.is_symlink() or process_exists(int(pid_text)):
            continue
        shutil.rmtree(staging, ignore_errors=True)
        removed.append(staging)
    return removed


def process_exists(pid: int) -> bool:
    """Whether a process with this id runs on this machine (another user's counts: it is left alone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or a name we did not make: leave it
    return True


def write_lesions_csv(rows: List[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LESION_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_json(data: dict, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")


def package_versions() -> Dict[str, Optional[str]]:
    versions: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
