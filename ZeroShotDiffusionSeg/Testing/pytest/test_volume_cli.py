"""The volume half of `zsdseg segment`: option parsing, routing, JSON progress, refusals before the model loads, SIGTERM."""

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from test_volume_fixtures import ThresholdSegmenter, sphere_volume, write
from ZeroShotDiffusionSegLib import segment_command
from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.segment_request import volume_request_from_args
from ZeroShotDiffusionSegLib.volume.cli import is_volume_path

HERE = Path(__file__).resolve().parent


def parse(*argv):
    parser = argparse.ArgumentParser(prog="zsdseg segment")
    segment_command.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def never_load():
    raise AssertionError("the model must not be loaded for an input that is refused")


@pytest.fixture
def volume_path(tmp_path):
    image, _ = sphere_volume(noise_hu=10, air_slices=(0, 11))
    return write(image, tmp_path / "sphere.nrrd")


def test_volume_paths_are_recognised(tmp_path, volume_path):
    assert is_volume_path(volume_path) and is_volume_path(tmp_path)  # a folder: a DICOM series
    flat = write(sitk.GetImageFromArray(np.random.default_rng(0).random((8, 8)).astype(np.float32)), tmp_path / "flat.nrrd")
    assert not is_volume_path(flat)  # a 2-D NRRD stays with the 2-D path
    (tmp_path / "broken.nii.gz").write_text("garbage")
    assert is_volume_path(tmp_path / "broken.nii.gz")  # the volume reader explains what is wrong
    assert is_volume_path(tmp_path / "missing.mha")
    assert not is_volume_path(tmp_path / "photo.png") and not is_volume_path(tmp_path / "scan.dcm")


def test_options_become_a_volume_request(volume_path, tmp_path):
    args = parse(volume_path, "--prompt", "liver tumor", "--out-dir", tmp_path / "o", "--seed-ras", "1,2,3",
                 "--axis", "coronal", "--batch-size", "3", "--window", "150/30", "--min-volume", "12.5", "--binary",
                 "--roi=-10,-20,-30,10,20,30", "--kl-threshold", "0.9", "--selection-threshold", "0.6")
    request = volume_request_from_args(args)
    assert request.coordinate_space == "RAS" and request.seeds == [(1.0, 2.0, 3.0)]
    assert request.roi_physical == ((-10.0, -20.0, -30.0), (10.0, 20.0, 30.0)) and request.roi_voxels is None
    assert (request.axis, request.batch_size, request.window, request.min_volume_mm3, request.binary) == ("coronal", 3, "150/30", 12.5, True)
    assert (request.params.kl_threshold, request.params.selection_threshold) == (0.9, 0.6)


def test_mixed_ras_and_lps_points_are_all_converted_to_lps(volume_path, tmp_path):
    args = parse(volume_path, "--out-dir", tmp_path / "o", "--seed-ras", "1,2,3", "--seed-lps", "4,5,6",
                 "--roi", "1,1,1,5,5,5", "--roi-space", "ras")
    request = volume_request_from_args(args)
    assert request.coordinate_space == "LPS"
    assert request.seeds == [(-1.0, -2.0, 3.0), (4.0, 5.0, 6.0)]
    assert request.roi_physical == ((-1.0, -1.0, 1.0), (-5.0, -5.0, 5.0))


def test_voxel_roi_and_bad_numbers(volume_path, tmp_path):
    args = parse(volume_path, "--out-dir", tmp_path / "o", "--prompt", "x", "--roi", "0,0,2,47,39,9", "--roi-space", "voxel")
    assert volume_request_from_args(args).roi_voxels == ((0, 0, 2), (47, 39, 9))
    with pytest.raises(UserError, match="roi_voxels .* must be a whole number"):
        volume_request_from_args(parse(volume_path, "--roi", "0,0,2.5,4,4,4", "--roi-space", "voxel"))
    for bad in (["--seed-ras", "1,2"], ["--roi", "1,2,3"], ["--seed-lps", "a,b,c"]):
        with pytest.raises(SystemExit):
            parse(volume_path, *bad)


def test_json_progress_and_summary_on_stdout(volume_path, tmp_path, capsys):
    args = parse(volume_path, "--prompt", "tumor", "--out-dir", tmp_path / "out", "--progress", "json",
                 "--selection-threshold", "0.8", "--batch-size", "4")
    assert segment_command.run(args, ThresholdSegmenter) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    progress = [line for line in lines if line["event"] == "progress"]
    assert progress[0]["stage"] == "loading model" and progress[-1]["stage"] == "done"
    assert all({"stage", "fraction", "eta_s"} <= set(line) for line in progress)
    assert [p["fraction"] for p in progress] == sorted(p["fraction"] for p in progress)
    done = lines[-1]
    assert done["event"] == "done" and done["lesions"] == 1
    assert sorted(Path(p).name for p in done["files"].values()) == ["labels.nrrd", "lesions.csv", "provenance.json", "score.nrrd"]


def test_plain_summary_names_the_lesions_and_outputs(volume_path, tmp_path, capsys):
    args = parse(volume_path, "--prompt", "tumor", "--out-dir", tmp_path / "out", "--progress", "none", "--selection-threshold", "0.8")
    assert segment_command.run(args, ThresholdSegmenter) == 0
    out = capsys.readouterr().out
    assert "lesion 1: 1.4" in out and "outputs in" in out and "labels.nrrd" in out


@pytest.mark.parametrize("extra, pattern", [
    (["--seed", "3,4"], r"--seed X,Y is for 2-D images; for a volume give --seed-ras"),
    (["--out", "mask.png"], r"--out is for 2-D images; a volume writes labels.nrrd"),
    (["--heatmap", "h.png", "--labels", "l.png"], r"--heatmap, --labels are for 2-D images"),
])
def test_two_d_options_are_refused_for_a_volume(volume_path, tmp_path, extra, pattern):
    args = parse(volume_path, "--prompt", "tumor", "--out-dir", tmp_path / "out", *extra)
    with pytest.raises(UserError, match=pattern):
        segment_command.run(args, never_load)


def test_input_errors_are_reported_before_the_model_loads(volume_path, tmp_path):
    with pytest.raises(UserError, match="a volume needs --out-dir FOLDER"):
        segment_command.run(parse(volume_path, "--prompt", "tumor"), never_load)
    with pytest.raises(UserError, match=r"seed \(0.0, 0.0, 900.0\) RAS is outside the volume"):
        segment_command.run(parse(volume_path, "--out-dir", tmp_path / "o", "--seed-ras", "0,0,900"), never_load)
    with pytest.raises(UserError, match="is constant"):
        constant = write(sitk.Image([4, 4, 4], sitk.sitkInt16), tmp_path / "zeros.nrrd")
        segment_command.run(parse(constant, "--prompt", "tumor", "--out-dir", tmp_path / "o"), never_load)
    assert not (tmp_path / "o").exists()


SIGTERM_SCRIPT = textwrap.dedent("""
    import argparse, sys, time
    sys.path.insert(0, {tests!r})
    from test_volume_fixtures import ThresholdSegmenter
    from ZeroShotDiffusionSegLib import segment_command
    from ZeroShotDiffusionSegLib.errors import Cancelled

    def slow(n):
        open({marker!r}, "w").close()
        time.sleep(1.0)

    parser = argparse.ArgumentParser()
    segment_command.add_arguments(parser)
    args = parser.parse_args(sys.argv[1:])
    try:
        sys.exit(segment_command.run(args, lambda: ThresholdSegmenter(on_call=slow)))
    except Cancelled:
        print("zsdseg: cancelled", file=sys.stderr)
        sys.exit(Cancelled.exit_code)
""")


def test_sigterm_stops_after_the_batch_with_exit_130_and_no_outputs(volume_path, tmp_path):
    marker = tmp_path / "segmenting"
    script = tmp_path / "run.py"
    script.write_text(SIGTERM_SCRIPT.format(tests=str(HERE), marker=str(marker)))
    process = subprocess.Popen(
        [sys.executable, str(script), volume_path, "--prompt", "tumor", "--out-dir", str(tmp_path / "out"),
         "--batch-size", "1", "--progress", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 60
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), process.communicate()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "stopping after the current batch" in err and "cancelled" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run.py", "segmenting", "sphere.nrrd"])


def test_the_terminal_bar_follows_the_events(capsys):
    from ZeroShotDiffusionSegLib.progress import ProgressEvent
    from ZeroShotDiffusionSegLib.volume.cli import progress_printer

    show, close = progress_printer("bar")
    for stage, fraction in [("read", 0.1), ("segment", 0.55), ("done", 1.0)]:
        show(ProgressEvent(stage, fraction, 1.0))
    close()
    err = capsys.readouterr().err
    assert "segment:  55%" in err and "done: 100%" in err
    assert progress_printer("none")[0] is None


def test_a_long_lesion_list_prints_the_largest_and_says_where_the_rest_are(capsys, tmp_path):
    """Random weights or a low threshold can give thousands of specks: the terminal gets the 20 largest
    (lesions come largest first) and one line for the rest, which lesions.csv holds."""
    from types import SimpleNamespace

    from ZeroShotDiffusionSegLib.volume.cli import LESIONS_PRINTED, print_summary

    rows = [{"id": index, "volume_ml": 1.0 / index, "longest_axial_diameter_mm": 1.0, "centroid_ras_x": 0.0,
             "centroid_ras_y": 0.0, "centroid_ras_z": 0.0, "mean_score": 0.9} for index in range(1, 2063)]
    print_summary(SimpleNamespace(messages=["2062 lesion(s)"], lesions=rows, out_dir=tmp_path,
                                  files={"lesions": tmp_path / "lesions.csv"}), "text")
    lines = capsys.readouterr().out.splitlines()
    assert LESIONS_PRINTED == 20 and len(lines) == 1 + 20 + 2
    assert lines[1].startswith("  lesion 1: 1.000 mL") and lines[20].startswith("  lesion 20: 0.050 mL")
    assert lines[21] == "  ... and 2042 smaller lesion(s): every lesion is in lesions.csv"
