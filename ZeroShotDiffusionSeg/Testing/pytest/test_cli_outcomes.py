"""How runs end and what they write: JSON consumers see errors and cancels, 2-D outputs follow the
umask like volume outputs, a CT window on a non-CT volume is flagged."""

import argparse
import json
import os

import numpy as np
import pytest

from test_volume_fixtures import ThresholdSegmenter, sphere_volume, write
from ZeroShotDiffusionSegLib import segment_command
from ZeroShotDiffusionSegLib.errors import Cancelled, UserError
from ZeroShotDiffusionSegLib.image_io import write_png
from ZeroShotDiffusionSegLib.volume.intensity import choose_intensity
from ZeroShotDiffusionSegLib.volume.request import VolumeRequest


def parse(*argv):
    parser = argparse.ArgumentParser()
    segment_command.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


@pytest.fixture
def volume_path(tmp_path):
    image, _ = sphere_volume(noise_hu=10, air_slices=(0, 11))
    return write(image, tmp_path / "sphere.nrrd")


def test_json_progress_ends_with_an_error_event(volume_path, tmp_path, capsys):
    args = parse(volume_path, "--out-dir", tmp_path / "o", "--seed-ras", "0,0,900", "--progress", "json")
    with pytest.raises(UserError, match="outside the volume"):
        segment_command.run(args, ThresholdSegmenter)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["event"] == "error" and "outside the volume" in lines[-1]["message"]


def test_json_progress_ends_with_a_cancelled_event(volume_path, tmp_path, capsys):
    def cancelled_segmenter():
        raise Cancelled("cancelled")  # as if Ctrl-C came while the model loads

    args = parse(volume_path, "--prompt", "tumor", "--out-dir", tmp_path / "o", "--progress", "json")
    with pytest.raises(Cancelled):
        segment_command.run(args, cancelled_segmenter)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1] == {"event": "cancelled"}


def test_two_d_outputs_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        write_png(tmp_path / "mask.png", np.zeros((4, 4), np.uint8))
    finally:
        os.umask(previous)
    assert (tmp_path / "mask.png").stat().st_mode & 0o777 == 0o644


def test_a_ct_window_on_a_volume_that_is_not_ct_is_flagged():
    mr = np.random.default_rng(0).uniform(0, 1, (4, 16, 16)).astype(np.float32)
    choice = choose_intensity(mr, "tumor", "350/50")
    assert choice.describe().startswith("intensity: window 'override' W350/L50")
    assert "does not look like CT" in choice.describe()
    ct = np.random.default_rng(0).normal(-500, 400, (4, 16, 16)).astype(np.float32)
    assert choose_intensity(ct, "tumor", "lung").describe().startswith("intensity: CT window 'lung'")


def test_an_empty_window_means_the_automatic_choice():
    assert VolumeRequest(window="  ").window is None


def test_lesion_table_never_writes_negative_zero(tmp_path):
    import SimpleITK as sitk

    from ZeroShotDiffusionSegLib.volume.consolidation import lesion_table
    from ZeroShotDiffusionSegLib.volume.outputs import write_lesions_csv

    labels = np.zeros((3, 3, 3), np.uint16)
    labels[1, 1, 1] = 1  # centre voxel at LPS (0, 0, 0): RAS would be (-0.0, -0.0, 0.0)
    image = sitk.GetImageFromArray(labels)
    image.SetOrigin((-1.0, -1.0, -1.0))
    rows = lesion_table(labels, np.ones(labels.shape, np.float32), image, axial_axis=2)
    write_lesions_csv(rows, tmp_path / "lesions.csv")
    assert "-0.0" not in (tmp_path / "lesions.csv").read_text()
    assert rows[0]["centroid_ras_x"] == 0.0 and rows[0]["centroid_lps_z"] == 0.0


def test_the_first_progress_event_has_no_eta_and_later_ones_follow_the_rate(monkeypatch):
    from ZeroShotDiffusionSegLib import progress as progress_module

    clock = iter([100.0, 100.00001, 110.0])
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    events = []
    tracker = progress_module.ProgressTracker(events.append, 12, "segment")
    tracker.update(1, "volume read")  # a few microseconds after the start: no rate yet
    tracker.update(2)
    tracker.update(3)  # 2 units in 10 s since the first update: 5 s per unit, 9 left
    assert [event.eta_s for event in events][0] is None
    assert events[2].eta_s == pytest.approx(45.0)


def test_a_long_poll_that_returns_the_same_status_is_reported_once(monkeypatch):
    from ZeroShotDiffusionSegLib.server.client import ServerClient

    statuses = iter([{"state": "running", "stage": "segment", "fraction": 0.5, "eta_s": 3.0, "version": 4}] * 4
                    + [{"state": "done", "stage": "done", "fraction": 1.0, "eta_s": None, "version": 5}])
    client = ServerClient("http://127.0.0.1:9")
    monkeypatch.setattr(client, "status", lambda job_id, **kwargs: next(statuses))
    events = []
    client.wait("job", progress=events.append, poll_s=0.01)
    client.close()
    assert [(event.stage, event.fraction) for event in events] == [("segment", 0.5), ("done", 1.0)]
