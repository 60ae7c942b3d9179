"""The worker's JSON-lines protocol, run as a real process with stdin/stdout pipes."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from test_runner_local import FAKE_WORKER, write_oblique_volume
from ZeroShotDiffusionSegLib.engine.types import SegmentationParams
from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.slicer.geometry import geometry_of_sitk_image, lps_to_ras
from ZeroShotDiffusionSegLib.slicer.results import ResultSession
from ZeroShotDiffusionSegLib.runners.protocol import (
    decode_job, encode_job, event_from_line, request_from_dict)
from ZeroShotDiffusionSegLib.volume.request import VolumeRequest


def run_worker(command, stdin_lines, timeout=120):
    completed = subprocess.run(command, input="".join(line + "\n" for line in stdin_lines), capture_output=True,
                               text=True, timeout=timeout)
    events = [json.loads(line) for line in completed.stdout.splitlines()]  # every stdout line must be JSON
    return completed, events


def test_request_roundtrips_through_json():
    request = VolumeRequest(prompt="liver tumor", mode="seed", seeds=[(1.5, -2.0, 3.25)],
                            roi_physical=((0.0, 0.0, 0.0), (10.0, 20.0, 30.0)),
                            axis="k", window="400/40", batch_size=4, min_volume_mm3=50.0, binary=True,
                            params=SegmentationParams(kl_threshold=0.9, timestep=200, selection_threshold=0.4))
    job_id, input_path, out_dir, decoded = decode_job(encode_job("j1", "/in.nrrd", "/out", request))
    assert (job_id, input_path, out_dir) == ("j1", "/in.nrrd", "/out")
    assert decoded == request
    assert request_from_dict({}) == VolumeRequest()
    voxel_roi = VolumeRequest(prompt="x", roi_voxels=((1, 2, 3), (4, 5, 6)))
    assert decode_job(encode_job("j2", "/in.nrrd", "/out", voxel_roi))[3] == voxel_roi


def test_version_skew_and_garbage_are_user_errors():
    with pytest.raises(UserError, match="unknown fields \\['colour'\\]"):
        request_from_dict({"prompt": "x", "colour": "red"})
    with pytest.raises(UserError, match="malformed request"):
        decode_job("not json")
    with pytest.raises(UserError):
        request_from_dict({"params": {"kl_threshold": -1}})
    assert event_from_line("Downloading model.safetensors: 12%") is None
    assert event_from_line('{"event": "nonsense"}') is None
    assert event_from_line('{"event": "ready", "model": "m", "device": "cpu"}').info == {"model": "m", "device": "cpu"}


def test_worker_serves_jobs_in_order_and_survives_bad_lines(tmp_path):
    source = tmp_path / "in.nrrd"
    write_oblique_volume(source)
    lines = [encode_job("first", str(source), str(tmp_path / "o1"), VolumeRequest(prompt="a")),
             "{broken",
             encode_job("second", str(source), str(tmp_path / "o2"), VolumeRequest(prompt="user-error")),
             encode_job("third", str(source), str(tmp_path / "o3"), VolumeRequest(prompt="b"))]
    completed, events = run_worker([sys.executable, FAKE_WORKER, "--model", "fake:ok"], lines)
    assert completed.returncode == 0, completed.stderr
    assert events[0] == {"event": "progress", "stage": "loading model", "fraction": 0.0, "eta_s": None,
                         "message": "fake:ok", "id": None}
    assert events[1] == {"event": "ready", "model": "fake:ok", "device": "cpu"}
    finals = [(e["event"], e.get("id")) for e in events if e["event"] in ("done", "error")]
    assert finals == [("done", "first"), ("error", None), ("error", "second"), ("done", "third")]
    assert [e["message"] for e in events if e["event"] == "error"][1] == "the ROI is outside the volume"
    done = next(e for e in events if e["event"] == "done")
    assert done["files"]["labels"] == str(tmp_path / "o1" / "labels.nrrd")
    assert "fake engine loaded" in completed.stderr and "fake engine loaded" not in completed.stdout


def test_model_load_failure_is_a_single_fatal_line_and_exit_code_2(tmp_path):
    completed, events = run_worker([sys.executable, FAKE_WORKER, "--model", "fake:fail"], [])
    assert completed.returncode == 2
    assert events[-1] == {"event": "error", "id": None, "fatal": True,
                          "message": "weights for fake:fail not found; download them or choose a local folder"}


def test_cli_dispatches_worker_and_defaults_agree_with_the_engine():
    from ZeroShotDiffusionSegLib import cli, worker
    from ZeroShotDiffusionSegLib.engine import DEFAULT_MODEL
    from ZeroShotDiffusionSegLib.slicer import panel

    args = cli.build_parser("worker").parse_args(["worker", "--device", "cpu"])
    assert args._run is worker.run and (args.model, args.device, args.dtype) == (DEFAULT_MODEL, "cpu", None)
    assert worker.DEFAULT_MODEL == DEFAULT_MODEL == panel.DEFAULT_MODEL


def _pipeline_available():
    import importlib.util

    return all(importlib.util.find_spec(name) for name in
               ("ZeroShotDiffusionSegLib.volume.pipeline", "ZeroShotDiffusionSegLib.engine.backbone"))


@pytest.mark.skipif(not _pipeline_available(), reason="volume pipeline or engine not in this checkout yet")
def test_real_worker_with_random_tiny_model_through_the_runner_keeps_the_input_geometry(tmp_path):
    from test_runner_local import final_event, wait_until
    from ZeroShotDiffusionSegLib.runners.local import LocalWorkerRunner

    source = tmp_path / "ct.nrrd"
    array = np.full((4, 24, 24), -1000, dtype=np.int16)
    array[:, 4:20, 4:20] = 40
    array[1:3, 9:14, 9:14] = 120
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 3.0))
    image.SetOrigin((12.5, -30.0, 100.0))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(source))
    runner = LocalWorkerRunner.for_model(sys.executable, "random:tiny", device="cpu")
    try:
        job = runner.start(str(source), str(tmp_path / "out"), VolumeRequest(prompt="liver tumor", batch_size=2))
        events = wait_until(runner, final_event, timeout=600)
        done = final_event(events)
        assert done.kind == "done" and done.job_id == job.job_id, (done, runner.log_tail())
        assert runner.worker_info == {"model": "random:tiny", "device": "cpu"}
        assert set(done.files) >= {"labels", "score", "lesions", "provenance"}
        fractions = [e.fraction for e in events if e.kind == "progress" and e.job_id == job.job_id]
        assert fractions and fractions == sorted(fractions) and fractions[-1] <= 1.0
        for name in ("labels", "score"):
            written = sitk.ReadImage(done.files[name])
            assert written.GetSize() == image.GetSize()
            assert np.allclose(written.GetOrigin(), image.GetOrigin())
            assert np.allclose(written.GetSpacing(), image.GetSpacing())
            assert np.allclose(written.GetDirection(), image.GetDirection())
        score_image = sitk.ReadImage(done.files["score"])
        score = sitk.GetArrayFromImage(score_image)
        assert score.dtype == np.float32 and score.min() >= 0.0 and score.max() <= 1.0
        # The panel's live threshold at the engine's threshold reproduces labels.nrrd and lesions.csv.
        labels = sitk.GetArrayFromImage(sitk.ReadImage(done.files["labels"]))
        geometry = lps_to_ras(geometry_of_sitk_image(score_image))
        view = ResultSession("prompt", "liver tumor", score, labels, geometry, threshold=0.5).view()
        assert np.array_equal(view.labels, labels)
        with open(done.files["lesions"]) as handle:
            csv_rows = list(csv.DictReader(handle))
        assert [{k: str(v) for k, v in row.items()} for row in view.lesions] == csv_rows
    finally:
        runner.shutdown()
