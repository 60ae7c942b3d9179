"""`zsdseg batch` attacked through its manifest and its output folder: names that climb out or collide,
inputs that block, formula cells, live staging folders of another run, a real kill -9 and resume.

Cases run on the thresholding stand-in engine (no model), so each test takes seconds."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_volume_fixtures import ThresholdSegmenter, sphere_volume, write
from ZeroShotDiffusionSegLib.cli import build_parser, main
from ZeroShotDiffusionSegLib.cohort import cli as batch_cli
from ZeroShotDiffusionSegLib.cohort.cases import CaseOptions, run_case, triage, write_batch_table
from ZeroShotDiffusionSegLib.cohort.manifest import load_cases
from ZeroShotDiffusionSegLib.volume.outputs import STAGING_PREFIX

LIBRARY = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    """A process id that no process has: a child that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


@pytest.fixture
def volume(tmp_path):
    image, _ = sphere_volume(size=(24, 28, 3), centre_index=(12, 14, 1), radius_mm=4, spacing=(0.8, 0.9, 2.0), noise_hu=10)
    return Path(write(image, tmp_path / "v.nrrd"))


def cases_of(manifest: Path, *options):
    args = build_parser("batch").parse_args(["batch", str(manifest), "--out-dir", str(manifest.parent / "o"),
                                             "--prompt", "tumor", *options])
    return load_cases(args)


def refused(tmp_path, capsys, text) -> str:
    (tmp_path / "m.csv").write_text(text)
    assert main(["batch", str(tmp_path / "m.csv"), "--out-dir", str(tmp_path / "o"), "--model", "no/such"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("zsdseg: error:") and error.count("\n") == 1, error
    return error


def test_a_case_id_with_a_newline_is_refused(tmp_path, capsys):
    """The id is the file name without its suffix: "evil\n.nrrd" gives "evil\n" (values are stripped, names not)."""
    assert "not a safe folder name" in refused(tmp_path, capsys, 'path\n"evil\n.nrrd"\n')
    folder = tmp_path / "volumes"
    folder.mkdir()
    (folder / "evil\n.nrrd").write_bytes(b"")
    assert main(["batch", str(folder), "--prompt", "tumor", "--out-dir", str(tmp_path / "o"), "--model", "no/such"]) == 2
    assert "not a safe folder name" in capsys.readouterr().err


def test_a_300_character_case_id_is_one_line_not_a_traceback(tmp_path, capsys):
    error = refused(tmp_path, capsys, f"path,case_id\nx.nrrd,{'a' * 300}\n")
    assert "is 300 characters long; at most 128" in error


def test_ids_that_differ_only_in_case_are_one_folder_on_macos_and_are_refused(tmp_path, capsys):
    assert "two cases share the id 'Case1' / 'case1'" in refused(tmp_path, capsys, "path,case_id\nx.nrrd,Case1\ny.nrrd,case1\n")


@pytest.mark.parametrize("case_id", ["..", ".hidden", "-rf", "a/b", "/etc", "a\\b", "=1+1", "a b", "\u00e9t\u00e9"])
def test_ids_that_climb_out_hide_or_look_like_options_are_refused(tmp_path, capsys, case_id):
    assert "not a safe folder name" in refused(tmp_path, capsys, f'path,case_id\nx.nrrd,"{case_id}"\n')


def test_a_fifo_in_the_manifest_fails_its_case_instead_of_hanging_the_batch(tmp_path, volume):
    os.mkfifo(tmp_path / "pipe.nrrd")
    (tmp_path / "m.csv").write_text(f"path,case_id\npipe.nrrd,pipe\n{volume},good\n")
    pipe, good = cases_of(tmp_path / "m.csv")
    assert pipe.request is None and "not a regular file or a folder (a FIFO" in pipe.error
    assert good.error is None
    record = triage(pipe, tmp_path / "o", CaseOptions(model="stub"))
    assert record["status"] == "failed" and "FIFO" in record["error"]


def test_a_case_folder_that_is_a_symlink_is_not_written_through(tmp_path, volume):
    outside = tmp_path / "outside"
    outside.mkdir()
    out_root = tmp_path / "o"
    out_root.mkdir()
    (out_root / "v").symlink_to(outside)  # planted in a shared results folder
    (tmp_path / "m.csv").write_text(f"path\n{volume}\n")
    [case] = cases_of(tmp_path / "m.csv")
    options = CaseOptions(model="stub")
    assert triage(case, out_root, options)["status"] == "failed"
    record = run_case(ThresholdSegmenter(), case, out_root, options)  # as a Ray actor would, after triage
    assert record["status"] == "failed" and "is a symbolic link" in record["error"]
    assert list(outside.iterdir()) == []


def test_formula_text_in_batch_csv_is_escaped(tmp_path):
    records = [{"case_id": "a", "path": "/x.nrrd", "status": "failed", "lesions": None, "total_volume_ml": None,
                "seconds": 1.5, "error": '=HYPERLINK("http://evil","click")'},
               {"case_id": "b", "path": "/y.nrrd", "status": "failed", "lesions": None, "total_volume_ml": None,
                "seconds": None, "error": "@SUM(1)"}]
    write_batch_table(records, tmp_path)
    with open(tmp_path / "batch.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["error"] == "'=HYPERLINK(\"http://evil\",\"click\")" and rows[1]["error"] == "'@SUM(1)"
    assert rows[0]["seconds"] == "1.5" and rows[1]["seconds"] == "" and rows[0]["lesions"] == ""


def test_hostile_manifest_values_never_start_a_batch_csv_cell_as_a_formula(tmp_path, volume):
    values = "=1+2"
    (tmp_path / "m.csv").write_text(
        "path,case_id,window,seed_ras,roi,mode,axis,min_volume\n"
        f"{volume},w,{values},,,,,\n{volume},s,,\"{values}\",,,,\n{volume},r,,,\"{values}\",,,\n"
        f"{volume},m,,,,{values},,\n{volume},a,,,,,{values},\n{volume},v,,,,,,{values}\n")
    out_root = tmp_path / "o"
    out_root.mkdir()
    records = [triage(case, out_root, CaseOptions(model="stub")) for case in cases_of(tmp_path / "m.csv")]
    assert all(record["status"] == "failed" for record in records)
    write_batch_table(records, out_root)
    with open(out_root / "batch.csv", newline="") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@")]


def test_skipped_and_failed_cases_have_null_numbers_in_json_progress(tmp_path, volume, capsys, monkeypatch):
    monkeypatch.setattr("ZeroShotDiffusionSegLib.segment_command.segmenter_factory", lambda args: ThresholdSegmenter)
    (tmp_path / "m.csv").write_text(f"path,case_id\n{volume},good\nmissing.nrrd,bad\n")
    argv = ["batch", str(tmp_path / "m.csv"), "--out-dir", str(tmp_path / "o"), "--prompt", "tumor", "--progress", "json", "--model", "stub:threshold"]
    assert main(argv) == 1
    assert main(argv) == 1  # the second time "good" is skipped
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    cases = [line for line in lines if line["event"] == "case"]
    statuses = [(line["case_id"], line["status"]) for line in cases]
    assert statuses == [("good", "done"), ("bad", "failed"), ("good", "skipped"), ("bad", "failed")]
    skipped = cases[2]
    assert skipped["seconds"] is None and isinstance(skipped["lesions"], int)
    assert all(isinstance(line["seconds"], float) for line in cases if line["status"] == "done")
    assert cases[1]["lesions"] is None and cases[1]["total_volume_ml"] is None


def test_starting_a_batch_keeps_a_live_runs_staging_and_removes_a_killed_ones(tmp_path):
    out_root = tmp_path / "o"
    (out_root / "case1").mkdir(parents=True)
    live = [out_root / f"{STAGING_PREFIX}{os.getpid()}-0123abcd", out_root / "case1" / f"{STAGING_PREFIX}{os.getpid()}-4567ef01"]
    dead = dead_pid()
    killed = [out_root / f"{STAGING_PREFIX}{dead}-89abcdef", out_root / "case1" / f"{STAGING_PREFIX}{dead}-fedcba98"]
    for folder in live + killed:
        folder.mkdir()
    live_partial = out_root / "case1" / f".seg.dcm.{os.getpid()}.partial"
    killed_partial = out_root / f".batch.csv.{dead}.partial"
    live_partial.write_bytes(b"being written")
    killed_partial.write_bytes(b"half")
    batch_cli.prepare_out_dir(out_root)
    assert all(folder.is_dir() for folder in live) and live_partial.is_file()
    assert not any(folder.exists() for folder in killed) and not killed_partial.exists()


KILLABLE_BATCH = """
import sys, time
sys.path.insert(0, {tests!r})
from test_volume_fixtures import ThresholdSegmenter
from ZeroShotDiffusionSegLib import segment_command
from ZeroShotDiffusionSegLib.cli import main

class Slow(ThresholdSegmenter):
    def segment_batch(self, images, **kwargs):
        time.sleep(0.4)
        return super().segment_batch(images, **kwargs)

segment_command.segmenter_factory = lambda args: Slow
sys.exit(main(["batch", {manifest!r}, "--out-dir", {out!r}, "--prompt", "tumor", "--progress", "none", "--batch-size", "1", "--model", "stub:threshold"]))
"""


def test_kill_9_mid_batch_then_resume_finishes_every_case_once(tmp_path, volume):
    rows = ["path,case_id"] + [f"{volume},case{n}" for n in range(4)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    out_root = tmp_path / "o"
    script = KILLABLE_BATCH.format(tests=str(Path(__file__).parent), manifest=str(tmp_path / "m.csv"), out=str(out_root))
    env = {**os.environ, "PYTHONPATH": str(LIBRARY) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out_root / "case1").is_dir():  # case0 done, case1 (likely) started
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert (out_root / "case0" / "provenance.json").is_file(), child.stderr.read().decode()
    with open(out_root / "batch.csv", newline="") as handle:  # never half a table
        assert [row["case_id"] for row in csv.DictReader(handle)] == [f"case{n}" for n in range(4)]
    first_case0 = (out_root / "case0" / "labels.nrrd").stat().st_mtime_ns
    again = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert again.returncode == 0, again.stderr.decode()
    with open(out_root / "batch.csv", newline="") as handle:
        statuses = {row["case_id"]: row["status"] for row in csv.DictReader(handle)}
    assert statuses["case0"] == "skipped" and set(statuses.values()) <= {"skipped", "done"}
    assert (out_root / "case0" / "labels.nrrd").stat().st_mtime_ns == first_case0
    assert not list(out_root.glob(STAGING_PREFIX + "*")) and not list(out_root.glob("*/" + STAGING_PREFIX + "*"))
    for n in range(4):
        assert (out_root / f"case{n}" / "labels.nrrd").read_bytes() == (out_root / "case0" / "labels.nrrd").read_bytes()


def test_commit_into_an_existing_folder_moves_provenance_last(tmp_path, monkeypatch):
    """A resumed batch trusts a folder whose provenance.json names its request; a kill -9 between two renames
    must therefore never leave a new provenance beside older files (healthy.nrrd used to come after it)."""
    from ZeroShotDiffusionSegLib.volume import outputs

    (tmp_path / "out").mkdir()
    staged = outputs.StagedOutputFolder(tmp_path / "out")
    for key in outputs.ALL_OUTPUT_NAMES:
        staged.path(key).write_text(key)
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(outputs.os, "replace", lambda source, target: (moved.append(Path(target).name), real_replace(source, target)))
    staged.commit()
    assert moved[-1] == "provenance.json" and sorted(moved) == sorted(outputs.ALL_OUTPUT_NAMES.values())
