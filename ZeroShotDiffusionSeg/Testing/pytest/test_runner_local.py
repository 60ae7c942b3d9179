"""LocalWorkerRunner against a real subprocess (fake_engine_worker.py) speaking the real protocol."""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import SimpleITK as sitk

import fake_engine_worker as fake
from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.runners.base import Runner
from ZeroShotDiffusionSegLib.runners.local import LocalWorkerRunner, kill_process_tree
from ZeroShotDiffusionSegLib.slicer.messages import OFFER_RESTART, worker_crash_message
from ZeroShotDiffusionSegLib.volume.request import VolumeRequest

FAKE_WORKER = str(Path(fake.__file__).resolve())


def write_oblique_volume(path, shape=(7, 8, 9)):
    """A small volume with an oblique direction, non-unit spacing and an offset origin."""
    image = sitk.GetImageFromArray(np.arange(np.prod(shape), dtype=np.int16).reshape(shape))
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    image.SetDirection(tuple(rotation.ravel()))
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-10.5, 20.25, 3.0))
    sitk.WriteImage(image, str(path))
    return image


def make_runner(model="fake:ok"):
    return LocalWorkerRunner([sys.executable, FAKE_WORKER, "--model", model, "--device", "cpu"])


def wait_until(runner, stop, timeout=30.0):
    """Poll like the Slicer QTimer does until ``stop(events)`` is true; return all events."""
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events.extend(runner.poll())
        if stop(events):
            return events
        time.sleep(0.02)
    raise AssertionError(f"timed out; events so far: {[(e.kind, e.stage, e.message) for e in events]}")


def final_event(events):
    finals = [e for e in events if e.final]
    return finals[-1] if finals else None


def gone(pid):
    """Dead, or a zombie waiting for a reaper (a container's PID 1 may never reap it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def input_volume(tmp_path):
    path = tmp_path / "input.nrrd"
    write_oblique_volume(path)
    return path


@pytest.fixture
def runner():
    runner = make_runner()
    yield runner
    runner.shutdown()


def test_job_runs_reports_progress_and_writes_known_labelmap_with_input_geometry(runner, input_volume, tmp_path):
    assert isinstance(runner, Runner) and not runner.busy
    job = runner.start(str(input_volume), str(tmp_path / "out1"), VolumeRequest(prompt="liver tumor"))
    assert runner.busy
    events = wait_until(runner, final_event)
    done = final_event(events)
    assert done.kind == "done", done
    assert done.job_id == job.job_id and not runner.busy
    assert [e.kind for e in events if e.kind == "ready"] == ["ready"]
    assert runner.worker_info == {"model": "fake:ok", "device": "cpu"}
    fractions = [e.fraction for e in events if e.kind == "progress" and e.job_id == job.job_id]
    assert fractions[-2:] == [0.5, 1.0] and fractions == sorted(fractions)
    assert done.messages == ["fake engine segmented 'liver tumor'"]
    assert done.lesions == [{"label": 1, "voxels": 48}, {"label": 2, "voxels": 4}]
    assert set(done.files) == {"labels", "score", "lesions", "provenance"}
    labels = sitk.ReadImage(done.files["labels"])
    source = sitk.ReadImage(str(input_volume))
    assert labels.GetDirection() == pytest.approx(source.GetDirection(), abs=1e-9)
    assert labels.GetOrigin() == pytest.approx(source.GetOrigin(), abs=1e-9)
    array = sitk.GetArrayFromImage(labels)
    assert array[fake.LESION_BOXES[1]].min() == 1 and (array == 1).sum() == 48 and (array == 2).sum() == 4
    # The stray print of the engine went to the log, not into the protocol.
    assert any(e.kind == "log" and e.message == "fake engine loaded" for e in events)


def test_worker_stays_warm_across_jobs(runner, input_volume, tmp_path):
    runner.start(str(input_volume), str(tmp_path / "a"), VolumeRequest(prompt="a"))
    wait_until(runner, final_event)
    first_pid = runner.pid
    runner.start(str(input_volume), str(tmp_path / "b"), VolumeRequest(prompt="b"))
    events = wait_until(runner, final_event)
    assert final_event(events).kind == "done"
    assert runner.pid == first_pid
    assert not any(e.kind == "ready" for e in events), "the model must not be loaded again"


def test_cancel_mid_run_kills_the_whole_process_tree_and_next_job_restarts(runner, input_volume, tmp_path):
    out = tmp_path / "slow"
    runner.start(str(input_volume), str(out), VolumeRequest(prompt="slow"))
    wait_until(runner, lambda events: (out / "pids.json").exists()
               and any(e.kind == "progress" and e.stage == "segmenting slices" for e in events))
    pids = json.loads((out / "pids.json").read_text())
    assert psutil.Process(pids["grandchild"]).ppid() == pids["worker"]
    started = time.monotonic()
    runner.cancel()
    assert time.monotonic() - started < 5
    assert not runner.busy
    assert gone(pids["worker"]) and gone(pids["grandchild"])
    events = wait_until(runner, final_event, timeout=5)
    assert final_event(events).kind == "cancelled"
    assert not any(e.kind == "done" for e in events)
    # The runner is usable again: a fresh worker is started for the next job.
    runner.start(str(input_volume), str(tmp_path / "after"), VolumeRequest(prompt="again"))
    events = wait_until(runner, final_event)
    assert final_event(events).kind == "done"
    assert runner.pid != pids["worker"]


def test_crash_is_reported_with_log_tail_and_the_worker_restarts(runner, input_volume, tmp_path):
    job = runner.start(str(input_volume), str(tmp_path / "c"), VolumeRequest(prompt="crash"))
    events = wait_until(runner, final_event)
    crashed = final_event(events)
    assert crashed.kind == "crashed" and crashed.job_id == job.job_id
    assert crashed.info["exit_code"] == 3
    assert "RuntimeError: CUDA error: out of memory" in crashed.log_tail
    message = worker_crash_message(crashed.info["exit_code"], crashed.log_tail)
    assert message.title == "Engine stopped" and "out of memory" in message.text
    assert OFFER_RESTART in message.actions and "exit code 3" in message.text
    runner.start(str(input_volume), str(tmp_path / "d"), VolumeRequest(prompt="fine"))
    assert final_event(wait_until(runner, final_event)).kind == "done"


def test_user_error_ends_the_job_but_not_the_worker(runner, input_volume, tmp_path):
    runner.start(str(input_volume), str(tmp_path / "e"), VolumeRequest(prompt="user-error"))
    events = wait_until(runner, final_event)
    error = final_event(events)
    assert (error.kind, error.message, error.fatal) == ("error", "the ROI is outside the volume", False)
    assert runner.worker_alive


def test_model_load_failure_is_one_fatal_error_not_a_crash(input_volume, tmp_path):
    runner = make_runner("fake:fail")
    try:
        runner.start(str(input_volume), str(tmp_path / "f"), VolumeRequest(prompt="x"))
        events = wait_until(runner, lambda events: final_event(events) is not None and not runner.worker_alive)
        time.sleep(0.2)
        events += runner.poll()
        finals = [e for e in events if e.final]
        assert len(finals) == 1 and finals[0].kind == "error" and finals[0].fatal
        assert finals[0].message.startswith("weights for fake:fail not found")
        assert not runner.busy
    finally:
        runner.shutdown()


def test_second_start_while_busy_is_refused(runner, input_volume, tmp_path):
    runner.start(str(input_volume), str(tmp_path / "g"), VolumeRequest(prompt="slow"))
    with pytest.raises(UserError, match="already running"):
        runner.start(str(input_volume), str(tmp_path / "h"), VolumeRequest(prompt="x"))
    runner.cancel()


def test_shutdown_ends_an_idle_worker(input_volume, tmp_path):
    runner = make_runner()
    runner.start(str(input_volume), str(tmp_path / "i"), VolumeRequest(prompt="x"))
    wait_until(runner, final_event)
    pid = runner.pid
    runner.shutdown()
    assert gone(pid) and runner.pid is None


def test_kill_process_tree_of_a_missing_pid_is_a_no_op():
    process = psutil.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert kill_process_tree(process.pid) == []


def test_for_model_builds_the_worker_command_and_environment(tmp_path):
    runner = LocalWorkerRunner.for_model("/opt/Slicer/bin/PythonSlicer", str(tmp_path), device="cuda",
                                         pythonpath=["/ext/qt-scripted-modules"], env={"PYTHONPATH": "/x"})
    assert runner.command == ["/opt/Slicer/bin/PythonSlicer", "-m", "ZeroShotDiffusionSegLib.worker",
                              "--model", str(tmp_path), "--device", "cuda"]
    assert runner.env["PYTHONPATH"] == os.pathsep.join(["/ext/qt-scripted-modules", "/x"])
    assert runner.env["HF_HUB_OFFLINE"] == "1", "a local model folder must work offline"
    hub = LocalWorkerRunner.for_model("python", "CompVis/stable-diffusion-v1-4", dtype="float16", env={})
    assert hub.command[-2:] == ["--dtype", "float16"] and "HF_HUB_OFFLINE" not in hub.env


def test_cancel_then_immediate_restart_keeps_each_jobs_events_apart(runner, input_volume, tmp_path):
    first = runner.start(str(input_volume), str(tmp_path / "s1"), VolumeRequest(prompt="slow"))
    runner.cancel()
    second = runner.start(str(input_volume), str(tmp_path / "s2"), VolumeRequest(prompt="quick"))
    events = wait_until(runner, lambda events: any(e.kind == "done" for e in events))
    assert [(e.kind, e.job_id) for e in events if e.final] == [("cancelled", first.job_id), ("done", second.job_id)]
    after_cancel = events[[e.kind for e in events].index("cancelled") + 1:]
    assert {e.job_id for e in after_cancel if e.kind == "progress"} == {second.job_id}


def test_rescore_names_the_finished_job_and_the_worker_finds_its_volume(runner, input_volume, tmp_path):
    first = runner.start(str(input_volume), str(tmp_path / "a"), VolumeRequest(prompt="liver tumor"))
    wait_until(runner, final_event)
    job = runner.rescore(first, str(tmp_path / "b"), VolumeRequest(prompt="hypodense liver lesion"))
    done = final_event(wait_until(runner, final_event))
    assert done.kind == "done" and done.job_id == job.job_id and job.input_path == str(input_volume)
    assert done.messages == ["fake engine segmented 'hypodense liver lesion'"]
    # A job the worker never finished (here: an unknown one) is sent with its input path instead.
    stranger = type(first)(str(input_volume), str(tmp_path / "c"))
    runner.rescore(stranger, str(tmp_path / "c"), VolumeRequest(prompt="x"))
    assert final_event(wait_until(runner, final_event)).kind == "done"
