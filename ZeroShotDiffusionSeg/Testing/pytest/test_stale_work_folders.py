"""What a killed run leaves on disk is removed by the next one: the server's work folder (uploads,
results) after kill -9, and a local run's staging folder in the output folder's parent."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from ZeroShotDiffusionSegLib.server.work_dirs import WorkRoot
from ZeroShotDiffusionSegLib.volume.outputs import STAGING_PREFIX, StagedOutputFolder

HOLD_A_WORK_ROOT = textwrap.dedent("""
    import sys, time
    from ZeroShotDiffusionSegLib.server.work_dirs import WorkRoot
    root = WorkRoot(sys.argv[1])
    (root.path / "job" ).mkdir()
    (root.path / "job" / "input.nrrd").write_bytes(b"patient data")
    print(root.path, flush=True)
    time.sleep(120)
""")


def test_a_killed_servers_work_folder_is_removed_by_the_next_server_and_logged(tmp_path, caplog):
    parent = tmp_path / "work"
    process = subprocess.Popen([sys.executable, "-c", HOLD_A_WORK_ROOT, str(parent)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        killed = Path(process.stdout.readline().strip())
        assert (killed / "job" / "input.nrrd").exists()
        live = WorkRoot(parent)  # the other server is alive: its folder stays
        assert (killed / "job" / "input.nrrd").exists()
        live.release()
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        with caplog.at_level(logging.INFO, logger="zsdseg.server"):
            fresh = WorkRoot(parent)
        assert not killed.exists() and not Path(str(killed) + ".lock").exists()
        assert f"removed 1 work folder(s) left by a server that is no longer running: {killed}" in caplog.text
        assert sorted(p.name for p in parent.iterdir()) == sorted([fresh.path.name, fresh.path.name + ".lock"])
        fresh.release()
        assert list(parent.iterdir()) == []
    finally:
        process.kill()
        process.wait(30)


def test_other_folders_in_the_work_dir_are_left_alone(tmp_path):
    parent = tmp_path / "work"
    (parent / "zsdseg-serve-new").mkdir(parents=True)  # no lock yet and fresh: a server may be creating it
    (parent / "unrelated").mkdir()
    root = WorkRoot(parent)
    assert (parent / "zsdseg-serve-new").is_dir() and (parent / "unrelated").is_dir()
    root.release()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(30)
    return process.pid


def test_a_killed_local_runs_staging_folder_is_removed_by_the_next_run(tmp_path):
    out_dir = tmp_path / "results"
    killed = tmp_path / f"{STAGING_PREFIX}{dead_pid()}-0123abcd"  # beside a not-yet-existing output folder
    killed.mkdir()
    (killed / "labels.nrrd").write_bytes(b"half")
    ours = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-fedc4321"  # a live run (this process): kept
    ours.mkdir()
    with StagedOutputFolder(out_dir) as staged:
        staged.path("labels").write_bytes(b"x")
        staged.commit()
    assert not killed.exists() and ours.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["results", ours.name])
