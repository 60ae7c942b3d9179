"""RemoteRunner (the Slicer logic's runner interface over HTTP) and ``zsdseg segment --server``,
against a real uvicorn server on 127.0.0.1 with the stand-in executor."""

import argparse
import json
import time

import pytest

from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.runners.remote import RemoteRunner
from ZeroShotDiffusionSegLib.segment_options import add_remote_arguments
from ZeroShotDiffusionSegLib.server.remote_command import run_remote_segment
from ZeroShotDiffusionSegLib.volume.request import VolumeRequest
from test_server_support import TOKENS, leftover_files, make_volume, stand_in_executor, start_server, volume  # noqa: F401


def events_until_final(runner, timeout_s=15.0):
    events, deadline = [], time.monotonic() + timeout_s
    while not (events and events[-1].final):
        assert time.monotonic() < deadline, f"no final event; got {[e.kind for e in events]}"
        events.extend(runner.poll())
        time.sleep(0.02)
    return events


def test_remote_runner_done_cancel_and_error(tmp_path, volume):
    junk = tmp_path / "junk.nrrd"
    junk.write_text("not an image")
    with start_server(tmp_path) as server:
        runner = RemoteRunner(server.url, token=TOKENS["alice"], poll_s=0.2)
        job = runner.start(str(volume), str(tmp_path / "out"), VolumeRequest(prompt="tumor"))
        assert runner.busy
        with pytest.raises(UserError, match="already running"):
            runner.start(str(volume), str(tmp_path / "other"), VolumeRequest())
        events = events_until_final(runner)
        kinds = [event.kind for event in events]
        assert kinds[0] == "ready" and kinds[-1] == "done" and "progress" in kinds
        assert events[0].info == {"model": "stand-in", "device": "cpu", "server": server.url}
        assert all(event.job_id == job.job_id for event in events)
        done = events[-1]
        local = stand_in_executor(volume, tmp_path / "local", VolumeRequest(prompt="tumor"))
        assert set(done.files) == {"labels", "score", "lesions", "provenance"}
        assert open(done.files["labels"], "rb").read() == local.files["labels"].read_bytes()
        assert done.lesions == local.lesions and done.messages == ["stand-in ran"]
        assert not runner.busy and "model stand-in" in runner.describe()

        runner.start(str(volume), str(tmp_path / "cancelled"), VolumeRequest(prompt="wait-for-cancel"))
        deadline = time.monotonic() + 10
        seen = []
        while not any(e.stage == "segmenting" for e in seen):
            assert time.monotonic() < deadline
            seen.extend(runner.poll())
            time.sleep(0.02)
        runner.cancel()
        assert events_until_final(runner)[-1].kind == "cancelled"
        assert not (tmp_path / "cancelled").exists()

        runner.start(str(junk), str(tmp_path / "bad"), VolumeRequest())
        error = events_until_final(runner)[-1]
        assert error.kind == "error" and "not a readable NRRD/NIfTI/MHA volume" in error.message and not error.fatal
        runner.shutdown()
        time.sleep(0.3)
        assert server.app.state.jobs.counts() == {"queued": 0, "running": 0, "workers": 1}
        assert leftover_files(server.app.state.jobs.work_root) == []


def test_remote_runner_reports_an_unreachable_server(tmp_path, volume):
    runner = RemoteRunner("http://127.0.0.1:9", token=TOKENS["alice"])  # port 9 (discard): nothing listens
    runner._client_factory = lambda: __import__("ZeroShotDiffusionSegLib.server.client", fromlist=["ServerClient"]).ServerClient(
        runner.url, token=TOKENS["alice"], retries=1, backoff_s=0.01)
    runner.start(str(volume), str(tmp_path / "out"), VolumeRequest())
    final = events_until_final(runner)[-1]
    assert final.kind == "error" and "cannot reach the zsdseg server at http://127.0.0.1:9 after 2 attempts" in final.message


def _segment_args(*argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("--out-dir")
    add_remote_arguments(parser)
    return parser.parse_args(list(argv))


def test_segment_with_server_writes_the_same_files(tmp_path, volume, capsys):
    token_file = tmp_path / "token"
    token_file.write_text(f"alice:{TOKENS['alice']}\n")
    request = VolumeRequest(prompt="tumor")
    local = stand_in_executor(volume, tmp_path / "local", request)
    with start_server(tmp_path) as server:
        args = _segment_args(str(volume), "--out-dir", str(tmp_path / "remote"), "--server", server.url, "--token-file", str(token_file))
        args.progress = "json"  # the volume command's own option: one JSON object per line on stdout
        assert run_remote_segment(args, request) == 0
        args.token_file = None
        with pytest.raises(UserError, match="needs a token: pass --token-file"):
            run_remote_segment(args, request)
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert lines[0] == {"event": "progress", "stage": "upload", "fraction": 0.05, "eta_s": None, "message": "0.0 MB"}
    assert {"stage": "done", "fraction": 0.95} in [{k: e.get(k) for k in ("stage", "fraction")} for e in lines]
    fractions = [e["fraction"] for e in lines if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # one run from 0 to 1, never back
    assert lines[-2]["event"] == "done" and lines[-2]["lesions"] == 1 and lines[-2]["messages"] == ["stand-in ran"]
    assert lines[-1]["event"] == "error" and "needs a token" in lines[-1]["message"]  # the second, refused run
    assert "model stand-in on cpu" in out.err and "remote: upload" in out.err
    for name, path in local.files.items():
        if name != "provenance":
            assert (tmp_path / "remote" / path.name).read_bytes() == path.read_bytes()


def ours_in_system_temp():
    import tempfile
    from pathlib import Path

    return {p.name for p in Path(tempfile.gettempdir()).glob("zsdseg-upload-*")}


def test_segment_with_server_converts_a_detached_header_and_times_out(tmp_path):
    before = ours_in_system_temp()
    volume = make_volume(tmp_path / "ct.nhdr", seed=2)  # .nhdr + .raw(.gz): not uploadable as is
    token_file = tmp_path / "token"
    token_file.write_text(TOKENS["alice"])
    with start_server(tmp_path) as server:
        args = _segment_args(str(volume), "--out-dir", str(tmp_path / "remote"), "--server", server.url, "--token-file", str(token_file))
        assert run_remote_segment(args, VolumeRequest(prompt="x")) == 0
        assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == ["labels.nrrd", "lesions.csv", "provenance.json", "score.nrrd"]
        args.server_timeout = 0.5
        args.out_dir = str(tmp_path / "slow")
        with pytest.raises(UserError, match="did not finish within --server-timeout 0.5 s; the job was cancelled"):
            run_remote_segment(args, VolumeRequest(prompt="wait-for-cancel"))
        assert not (tmp_path / "slow").exists()
    assert ours_in_system_temp() == before  # the converted upload was removed
    assert leftover_files(tmp_path / "server-work") == []


def test_zsdseg_segment_server_option_end_to_end(tmp_path, volume, capsys):
    """The top-level command as a user types it: the lead's parser, the volume options, --server."""
    from ZeroShotDiffusionSegLib.cli import main

    token_file = tmp_path / "token"
    token_file.write_text(TOKENS["bob"])
    with start_server(tmp_path) as server:
        code = main(["segment", str(volume), "--prompt", "liver tumor", "--window", "400/40", "--out-dir", str(tmp_path / "out"),
                     "--progress", "none", "--server", server.url, "--token-file", str(token_file)])
        assert code == 0, capsys.readouterr().err
        assert main(["segment", str(volume), "--out-dir", str(tmp_path / "x"), "--server", server.url, "--token-file", str(token_file)]) == 2
    err = capsys.readouterr().err
    assert "zsdseg: error: a volume needs --prompt TEXT" in err  # refused locally, before any upload
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["request"]["prompt"] == "liver tumor" and provenance["request"]["window"] == "400/40"
