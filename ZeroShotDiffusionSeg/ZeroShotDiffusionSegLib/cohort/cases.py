"""One case of a batch, run or skipped the same way in the driver process and in a Ray actor.

A case is done when its folder holds every output and its provenance.json names the same input
checksum, request and model as this run would: then it is skipped. Otherwise ``run_volume`` writes
the folder all-or-nothing, so an interrupted batch leaves complete cases or none.
"""

from __future__ import annotations

import csv
import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from ..errors import Cancelled, UserError
from ..progress import ProgressEvent
from ..volume.outputs import OUTPUT_NAMES
from .manifest import Case

RECORD_COLUMNS = ["case_id", "path", "status", "lesions", "total_volume_ml", "seconds", "error"]
BATCH_TABLE = "batch.csv"
# A spreadsheet reads a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class CaseOptions:
    """What every case of the batch shares besides its request: the model, the extra DICOM outputs, --force."""

    model: str
    force: bool = False
    dicom_seg: bool = False
    dicom_seg_score: bool = False

    @property
    def extra_outputs(self) -> List[str]:
        """File names besides run_volume's that must exist for a case to count as done."""
        from ..dicom.export import dicom_output_names

        return dicom_output_names(self.dicom_seg, self.dicom_seg_score)


def _plain(value):
    """A value as it reads back from provenance.json (tuples become lists)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def is_done(case: Case, out_dir: Path, options: CaseOptions) -> bool:
    """Whether ``out_dir`` holds this case's complete outputs for the same input, request and model."""
    from ..volume.io import input_sha256

    names = list(OUTPUT_NAMES.values()) + options.extra_outputs
    if options.force or case.request is None or not all((out_dir / name).is_file() for name in names):
        return False
    try:
        provenance = json.loads((out_dir / OUTPUT_NAMES["provenance"]).read_text(encoding="utf-8"))
        same = (provenance["request"] == _plain(case.request.to_dict())
                and provenance["segmenter"]["model_id"] == options.model
                and provenance["input"]["sha256"] == input_sha256(case.path))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(same)


def lesion_summary(out_dir: Path):
    """(lesion count, total volume in mL) from a case's lesions.csv."""
    with open(out_dir / OUTPUT_NAMES["lesions"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return len(rows), round(sum(float(row["volume_ml"]) for row in rows), 6)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, UserError) else f"{type(error).__name__}: {text}"


def new_record(case: Case, status: str = "pending", error: str = "") -> dict:
    """A batch.csv row; a number not known (lesions of a failed case, seconds of one not run here) is None:
    an empty cell in batch.csv, ``null`` in ``--progress json``."""
    return {"case_id": case.case_id, "path": case.path, "status": status, "lesions": None, "total_volume_ml": None,
            "seconds": None, "error": error}


def case_folder(out_root: Path, case: Case) -> Path:
    """DIR/<case_id>, refused when it is a symbolic link: the outputs would land wherever it points, outside DIR."""
    out_dir = Path(out_root) / case.case_id
    if out_dir.is_symlink():
        raise UserError(f"{out_dir} is a symbolic link; a case writes only inside --out-dir: remove the link")
    return out_dir


def triage(case: Case, out_root: Path, options: CaseOptions) -> dict:
    """A case's record before running: failed (invalid row, unsafe folder), skipped (already done) or pending."""
    if case.error:
        return new_record(case, "failed", case.error)
    try:
        out_dir = case_folder(out_root, case)
    except UserError as error:
        return new_record(case, "failed", str(error))
    if is_done(case, out_dir, options):
        record = new_record(case, "skipped")
        record["lesions"], record["total_volume_ml"] = lesion_summary(out_dir)
        return record
    return new_record(case)


def run_case(segmenter, case: Case, out_root: Path, options: CaseOptions,
             progress: Optional[Callable[[ProgressEvent], None]] = None, cancel=None) -> dict:
    """Run one case exactly as ``zsdseg segment`` would; returns its batch.csv row.
    Only a cancel escapes: every other error is recorded as the case's."""
    from ..dicom.export import check_dicom_export, write_dicom_outputs
    from ..volume.pipeline import run_volume

    start = time.perf_counter()
    record = new_record(case, "failed")
    try:
        out_dir = case_folder(out_root, case)
        check_dicom_export(case.path, case.request, options.dicom_seg, options.dicom_seg_score)
        result = run_volume(case.path, out_dir, segmenter, case.request, progress=progress, cancel=cancel)
        write_dicom_outputs(case.path, result, case.request, options.dicom_seg, options.dicom_seg_score)
        record["status"] = "done"
        record["lesions"], record["total_volume_ml"] = lesion_summary(out_dir)
    except (Cancelled, KeyboardInterrupt):
        raise
    except Exception as error:  # a bad input, or a bug or engine failure in one case, must not end the batch
        record["error"] = one_line(error)
        if os.environ.get("ZSDSEG_DEBUG"):
            traceback.print_exc()
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def write_batch_table(records: List[dict], out_root: Path) -> Path:
    """DIR/batch.csv, replaced atomically so that a reader never sees half a table."""
    path = Path(out_root) / BATCH_TABLE
    partial = path.with_name(f".{BATCH_TABLE}.{os.getpid()}.partial")
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=RECORD_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows([{key: _cell(value) for key, value in record.items()} for record in records])
    os.replace(partial, path)
    return path


def _cell(value):
    """A text cell that a spreadsheet would run as a formula gets a leading apostrophe (shown as text)."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value
