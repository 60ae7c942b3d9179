"""The cases of a batch: read from a CSV manifest or a folder of volumes, each turned into the
VolumeRequest ``zsdseg segment`` would build for the same options.

A manifest needs a ``path`` column; every other column is optional and overrides the command
line's option of the same meaning for that row (CASE_COLUMNS). Relative paths are relative to the
manifest's folder. Errors in the manifest as a whole (no path column, unknown column, two cases with
one id) refuse the batch; an error in one row's values fails only that case.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import UserError
from ..volume.io import VOLUME_SUFFIXES, has_volume_suffix
from ..volume.request import VolumeRequest

# column -> what it holds; the command line option of the same name gives the default.
CASE_COLUMNS = {
    "path": "volume file or DICOM series folder (required)",
    "case_id": "output sub-folder name (default: the file name without its suffix)",
    "prompt": "what to segment (overrides --prompt)",
    "normal_prompt": "the healthy counterpart of this case's prompt (as --normal-prompt; \"none\" turns the contrast off)",
    "mode": "prompt, seed or unsupervised",
    "seed_ras": "seed points X,Y,Z in RAS mm; several separated by ';'",
    "seed_lps": "seed points X,Y,Z in LPS mm; several separated by ';'",
    "roi": "X0,Y0,Z0,X1,Y1,Z1 in roi_space",
    "roi_space": "ras, lps or voxel",
    "window": "WIDTH/LEVEL or a preset name",
    "axis": "auto, a patient plane or i/j/k",
    "min_volume": "drop lesions smaller than this (mm3)",
    "series_uid": "the DICOM series to read when the folder holds several",
}
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # whole id (fullmatch: a trailing newline is not safe)
# A case id names a folder; file systems take 255 bytes per name, and a shorter bound leaves room for
# the hidden files written beside the outputs (".seg.dcm.<pid>.partial").
MAX_CASE_ID = 128


@dataclass
class Case:
    """One volume of the batch: where it is, where its outputs go, what to ask. ``request`` is None and
    ``error`` says why when the row's values are invalid (the case then fails without running)."""

    case_id: str
    path: str
    request: Optional[VolumeRequest] = None
    error: Optional[str] = None


def default_case_id(path: Path) -> str:
    name = path.name
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _row_namespace(args: argparse.Namespace, row: Dict[str, str]) -> argparse.Namespace:
    """The command line's options with this row's values in their place, parsed by segment's own parsers."""
    from ..segment_options import parse_point, parse_roi

    ns = copy.copy(args)
    if row.get("prompt"):
        ns.prompt = row["prompt"]
    if row.get("mode"):
        ns.mode = row["mode"]
    for column in ("seed_ras", "seed_lps"):
        if row.get(column):
            setattr(ns, column, [parse_point(point) for point in row[column].split(";") if point.strip()])
    if row.get("roi"):
        ns.roi = parse_roi(row["roi"])
    for column in ("roi_space", "window", "axis"):
        if row.get(column):
            setattr(ns, column, row[column].lower() if column != "window" else row[column])
    if row.get("min_volume"):
        ns.min_volume = float(row["min_volume"])
    return ns


def input_kind_error(path: Path) -> Optional[str]:
    """Why ``path`` cannot be a case's input without reading it, or None. A FIFO, socket or device
    would block the reader (and the checksum) forever instead of failing; a missing path is left to
    the volume reader, which says so."""
    try:
        if not path.exists() or path.is_file() or path.is_dir():
            return None
    except OSError as error:  # a name too long, a loop of links
        return f"cannot use {path} as an input: {error.strerror}"
    return f"{path} is not a regular file or a folder (a FIFO, socket or device); give a volume file or a DICOM folder"


def case_from_row(args: argparse.Namespace, row: Dict[str, str], base: Path) -> Case:
    from ..segment_request import volume_request_from_args
    from ..volume.pipeline import resolve_mode

    path = Path(row["path"]).expanduser()
    path = path if path.is_absolute() else base / path
    case_id = row.get("case_id") or default_case_id(path)
    case = Case(case_id, str(path), error=input_kind_error(path))
    if case.error:
        return case
    try:
        request = volume_request_from_args(_row_namespace(args, row))
        if row.get("series_uid"):
            request = dataclasses.replace(request, series_uid=row["series_uid"])
        if row.get("normal_prompt"):
            request = dataclasses.replace(request, normal_prompt=row["normal_prompt"])
        resolve_mode(request)
        case.request = request
    except (UserError, argparse.ArgumentTypeError, ValueError) as error:
        case.error = str(error)
    return case


def read_manifest(path: Path) -> List[Dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            rows = [{key.strip(): (value or "").strip() for key, value in row.items() if key} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"cannot read the manifest {path}: {error}") from None
    if "path" not in columns:
        raise UserError(f"the manifest {path} has no 'path' column (columns: {', '.join(columns) or 'none'})")
    unknown = [name for name in columns if name not in CASE_COLUMNS]
    if unknown:
        raise UserError(f"the manifest {path} has unknown column(s) {', '.join(unknown)}; known: {', '.join(CASE_COLUMNS)}")
    blank = [number for number, row in enumerate(rows, start=2) if not row.get("path")]
    if blank:
        raise UserError(f"the manifest {path} has rows without a path (line(s) {', '.join(map(str, blank))})")
    return rows


def folder_rows(folder: Path) -> List[Dict[str, str]]:
    """One row per volume file in the folder, and one per sub-folder (a DICOM series), in name order."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    rows = [{"path": p.name} for p in entries if p.is_dir() or (p.is_file() and has_volume_suffix(p))]  # relative to the folder
    if not rows:
        raise UserError(f"{folder} holds no volume files ({', '.join(VOLUME_SUFFIXES)}) or DICOM series folders")
    return rows


def load_cases(args: argparse.Namespace) -> List[Case]:
    """The batch's cases from MANIFEST (a CSV file or a folder); refuses duplicate or unsafe case ids."""
    source = Path(args.manifest)
    if not source.exists():
        raise UserError(f"manifest not found: {source}")
    if source.is_dir():
        if not (args.prompt or args.seed_ras or args.seed_lps or args.mode == "unsupervised"):
            raise UserError('a folder of volumes needs --prompt TEXT (or --mode unsupervised) for all its cases')
        rows, base = folder_rows(source), source.absolute()
    else:
        rows, base = read_manifest(source), source.absolute().parent
    cases = [case_from_row(args, row, base) for row in rows]
    seen: Dict[str, Case] = {}
    for case in cases:
        check_case_id(case.case_id)
        # Compared without case: on a case-insensitive file system (macOS, Windows shares) "A" and "a" are one folder.
        same = seen.get(case.case_id.casefold())
        if same is not None:
            ids = repr(case.case_id) if same.case_id == case.case_id else f"{same.case_id!r} / {case.case_id!r}"
            raise UserError(f"two cases share the id {ids} ({same.path} and {case.path}); ids must differ in more than "
                            "upper/lower case; give a case_id column")
        seen[case.case_id.casefold()] = case
    return cases


def check_case_id(case_id: str) -> None:
    """A case id must be a plain folder name inside --out-dir: nothing that climbs out or hides."""
    if len(case_id) > MAX_CASE_ID:
        raise UserError(f"case id {case_id[:40]!r}... is {len(case_id)} characters long; at most {MAX_CASE_ID}")
    if not _SAFE_ID.fullmatch(case_id):
        raise UserError(f"case id {case_id!r} is not a safe folder name (letters, digits, '.', '_', '-')")
