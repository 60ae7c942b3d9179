"""``zsdseg batch``: segment every case of a manifest into DIR/<case_id>/, resumable, failures kept per case.

Embedded (default): this process loads the model once and runs the cases in order. ``--ray``: Ray
actors, each with its own model, run them (cohort/ray_pool.py). Either way each case goes through
``run_volume`` exactly as ``zsdseg segment`` would, and DIR/batch.csv records every case.

Exit status: 0 every case done or skipped; 1 at least one case failed (see batch.csv); 2 the batch
itself was refused (bad manifest, options, output folder, missing extra); 130 cancelled.
"""

from __future__ import annotations

import fcntl
import functools
import json
import sys
import threading
import time
from pathlib import Path

from ..errors import Cancelled, UserError
from ..volume.outputs import process_exists, remove_stale_staging
from .cases import CaseOptions, run_case, triage, write_batch_table
from .manifest import CASE_COLUMNS, load_cases

FAILED_EXIT = 1
LOCK_NAME = ".zsdseg-batch.lock"


def add_arguments(parser) -> None:
    from ..dicom.export import add_dicom_seg_arguments
    from ..segment_options import add_engine_arguments, add_volume_arguments
    from ..volume.request import MODES

    parser.add_argument("manifest", type=Path,
                        help="CSV with a 'path' column (optional: " + ", ".join(c for c in CASE_COLUMNS if c != "path")
                             + ") or a folder of volumes / DICOM series folders")
    parser.add_argument("--prompt", help="the prompt of every case without its own prompt column")
    parser.add_argument("--mode", choices=MODES, default="auto", help="auto: seed if seeds are given, else prompt")
    parser.add_argument("--force", action="store_true", help="redo cases whose outputs already match")
    add_engine_arguments(parser)
    add_volume_arguments(parser)
    add_dicom_seg_arguments(parser)
    ray = parser.add_argument_group("Ray cluster (pip install 'zeroshotdiffusionseg[ray]')")
    ray.add_argument("--ray", metavar="auto|local|ADDRESS",
                     help="run the cases on Ray actors: auto = the running cluster, local = a new one on this machine, "
                          "or a cluster address (ray://host:10001 or host:6379)")
    ray.add_argument("--workers", type=int, help="number of actors (default: as many as the cluster's resources allow)")
    ray.add_argument("--gpus-per-worker", type=float, default=0.0,
                     help="GPUs per actor, fractions allowed (0.5: two actors share a GPU); 0 = CPU actors (default)")


@functools.lru_cache(maxsize=None)
def _lock(out_root: Path):
    """Held until the process exits (the OS releases it on kill -9): one batch per output folder at a time."""
    handle = open(out_root / LOCK_NAME, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UserError(f"another zsdseg batch is writing {out_root}; wait for it or use another --out-dir") from None
    return handle


def prepare_out_dir(out_root: Path) -> None:
    """Create DIR, take its lock, and remove what an interrupted (killed) run left behind: staging folders
    and half-written files whose process is gone. A live ``zsdseg segment`` writing into DIR keeps its own."""
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the output folder {out_root}: {error.strerror}") from None
    lock = _lock(out_root)
    for folder in [out_root, *(p for p in out_root.iterdir() if p.is_dir() and not p.is_symlink())]:
        remove_stale_staging(folder)
        for partial in folder.glob(".*.partial"):  # batch.csv, seg.dcm in writing: ".<name>.<pid>.partial"
            pid = partial.name[: -len(".partial")].rsplit(".", 1)[-1]
            if pid.isdigit() and not process_exists(int(pid)):
                partial.unlink(missing_ok=True)
    return lock


def _check_options(args) -> None:
    if args.out_dir is None:
        raise UserError("give --out-dir DIR: each case writes DIR/<case_id>/, and DIR/batch.csv lists them all")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.gpus_per_worker < 0:
        raise UserError(f"--gpus-per-worker must be >= 0, got {args.gpus_per_worker}")
    if (args.workers is not None or args.gpus_per_worker) and not args.ray:
        raise UserError("--workers and --gpus-per-worker are for --ray; the embedded batch runs one model in this process")
    if args.dicom_seg or args.dicom_seg_score:
        from ..dicom.export import INSTALL_HINT

        try:
            import highdicom  # noqa: F401
        except ImportError:
            raise UserError(f"--dicom-seg needs highdicom: {INSTALL_HINT}") from None


class BatchProgress:
    """A bar over cases (with the running case's stage), JSON lines, or nothing."""

    def __init__(self, kind: str, total: int):
        self.kind, self.bar = kind, None
        if kind == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="case", file=sys.stderr, dynamic_ncols=True)

    def stage(self, case_id: str):
        if self.bar is None:
            return None

        def show(event) -> None:
            self.bar.set_postfix_str(f"{case_id}: {event.stage} {event.message}"[:60], refresh=True)
        return show

    def finished(self, record: dict) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"{record['case_id']}: {record['status']}", refresh=True)
        elif self.kind == "json":
            print(json.dumps({"event": "case", **record}), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_embedded(pending, out_root: Path, options: CaseOptions, load_segmenter, progress: BatchProgress, finished) -> None:
    """Every pending case in this process with one model, loaded on the first case that needs it."""
    from ..volume.cli import cancel_on_signals

    cancel = threading.Event()
    segmenter = None
    with cancel_on_signals(cancel):
        for case in pending:
            if segmenter is None:
                segmenter = load_segmenter()
            finished(run_case(segmenter, case, out_root, options, progress=progress.stage(case.case_id), cancel=cancel))


def print_summary(records, out_root: Path, seconds: float, kind: str) -> None:
    counts = {status: sum(r["status"] == status for r in records) for status in ("done", "skipped", "failed", "pending")}
    if kind == "json":
        print(json.dumps({"event": "done", "table": str(out_root / "batch.csv"), "seconds": round(seconds, 3), **counts}))
        return
    for record in records:
        if record["status"] == "failed":
            print(f"  {record['case_id']}: failed: {record['error']}")
    print(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"
          + (f", {counts['pending']} not run" if counts["pending"] else "")
          + f" of {len(records)} cases in {seconds:.1f} s; table: {out_root / 'batch.csv'}")


def run(args) -> int:
    from ..segment_command import segmenter_factory

    start = time.perf_counter()
    _check_options(args)
    if args.ray:
        from .ray_pool import import_ray

        import_ray()  # says how to install Ray before anything else happens
    cases = load_cases(args)
    out_root = Path(args.out_dir).absolute()
    prepare_out_dir(out_root)
    options = CaseOptions(model=args.model, force=args.force, dicom_seg=args.dicom_seg, dicom_seg_score=args.dicom_seg_score)
    records = {case.case_id: triage(case, out_root, options) for case in cases}
    pending = [case for case in cases if records[case.case_id]["status"] == "pending"]
    kind = args.progress or ("bar" if sys.stderr.isatty() else "none")
    progress = BatchProgress(kind, len(cases))
    for record in records.values():
        if record["status"] != "pending":
            progress.finished(record)

    def finished(record: dict) -> None:
        records[record["case_id"]] = record
        progress.finished(record)
        write_batch_table(list(records.values()), out_root)  # after every case: an interrupted batch keeps its table

    write_batch_table(list(records.values()), out_root)
    cancelled = False
    try:
        if pending and args.ray:
            from .ray_pool import run_on_ray

            on_stage = (lambda case_id, event: progress.stage(case_id)(event)) if progress.bar is not None else None
            run_on_ray(pending, out_root, options, args, finished, on_stage)
        elif pending:
            run_embedded(pending, out_root, options, segmenter_factory(args), progress, finished)
    except (Cancelled, KeyboardInterrupt):
        cancelled = True
    finally:
        progress.close()
        write_batch_table(list(records.values()), out_root)
    print_summary(list(records.values()), out_root, time.perf_counter() - start, kind)
    if cancelled:
        raise Cancelled("cancelled")
    return FAILED_EXIT if any(r["status"] == "failed" for r in records.values()) else 0
