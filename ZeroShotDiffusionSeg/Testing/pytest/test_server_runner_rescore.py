"""RemoteRunner.rescore: a new prompt on the volume the server kept from the last finished job (no second
upload), against a real uvicorn server on 127.0.0.1 with the stand-in executor."""

import time
from collections import Counter

import httpx
import pytest

from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.runners.base import JobHandle
from ZeroShotDiffusionSegLib.runners.remote import RemoteRunner
from ZeroShotDiffusionSegLib.server.client import JobNotFound, ServerClient
from ZeroShotDiffusionSegLib.volume.request import VolumeRequest
from test_server_runner import events_until_final
from test_server_support import TOKENS, leftover_files, stand_in_executor, start_server, volume  # noqa: F401

ALICE = {"Authorization": f"Bearer {TOKENS['alice']}"}


def counting_server(tmp_path, **settings):
    """start_server, with ``server.calls`` counting every (method, route) it answered; a job id becomes {id}."""
    server = start_server(tmp_path, **settings)
    server.calls = Counter()

    @server.app.middleware("http")
    async def count(request, call_next):
        parts = request.url.path.split("/")
        if len(parts) > 2 and parts[1] == "jobs":
            parts[2] = "{id}"
        server.calls[(request.method, "/".join(parts))] += 1
        return await call_next(request)

    return server


def server_job_ids(server):
    return sorted(job["id"] for job in httpx.get(f"{server.url}/jobs", headers=ALICE).json())


def finished(runner):
    events = events_until_final(runner)
    assert events[-1].kind == "done", [(e.kind, e.message) for e in events]
    return events


def first_run(server, volume, tmp_path, request=VolumeRequest(prompt="liver tumor")):
    """A RemoteRunner on ``server`` and its first finished job (an upload): (runner, job handle, done event)."""
    runner = RemoteRunner(server.url, token=TOKENS["alice"], poll_s=0.2)
    first = runner.start(str(volume), str(tmp_path / "first"), request)
    return runner, first, finished(runner)[-1]


def assert_same_files(done, expected):
    for name in ("labels", "score", "lesions"):
        assert open(done.files[name], "rb").read() == expected.files[name].read_bytes(), name


def test_rescore_reprompts_the_kept_job_without_a_second_upload(tmp_path, volume):
    expected = stand_in_executor(volume, tmp_path / "expected", VolumeRequest(prompt="hypodense liver lesion"))
    with counting_server(tmp_path) as server:
        runner, first, _ = first_run(server, volume, tmp_path)
        kept = server_job_ids(server)
        assert len(kept) == 1, "the finished job stays on the server for a re-prompt"

        second = runner.rescore(first, str(tmp_path / "second"), VolumeRequest(prompt="hypodense liver lesion"))
        assert runner.busy and second.input_path == first.input_path and second.job_id != first.job_id
        events = finished(runner)
        assert all(event.job_id == second.job_id for event in events)
        assert "progress" in [event.kind for event in events] and "log" not in [event.kind for event in events]
        assert_same_files(events[-1], expected)
        assert events[-1].lesions == expected.lesions and events[-1].messages == ["stand-in ran"]
        assert server.calls[("POST", "/jobs")] == 1 and server.calls[("POST", "/jobs/{id}/prompt")] == 1
        after = server_job_ids(server)
        assert len(after) == 1 and after != kept, "the re-prompt's job is kept, the one it replaced deleted"

        third = runner.rescore(second, str(tmp_path / "third"), VolumeRequest(prompt="metastasis"))
        assert third.input_path == first.input_path
        finished(runner)
        assert server.calls[("POST", "/jobs")] == 1 and server.calls[("POST", "/jobs/{id}/prompt")] == 2
        assert len(server_job_ids(server)) == 1

        runner.start(str(volume), str(tmp_path / "fourth"), VolumeRequest(prompt="liver tumor"))
        finished(runner)
        assert server.calls[("POST", "/jobs")] == 2 and len(server_job_ids(server)) == 1, "a new upload replaces it"
        work_root = server.app.state.jobs.work_root
        assert leftover_files(work_root) != []
        runner.shutdown()
        assert server_job_ids(server) == [] and leftover_files(work_root) == []


def test_an_expired_job_is_uploaded_again_and_the_log_says_so(tmp_path, volume):
    expected = stand_in_executor(volume, tmp_path / "expected", VolumeRequest(prompt="metastasis"))
    with counting_server(tmp_path) as server:
        runner, first, _ = first_run(server, volume, tmp_path)
        (expired,) = server_job_ids(server)
        server.app.state.jobs.remove_expired(now=time.time() + 10 * 3600)  # past its result TTL: what the reaper does
        assert server_job_ids(server) == []

        runner.rescore(first, str(tmp_path / "second"), VolumeRequest(prompt="metastasis"))
        events = finished(runner)
        logs = [event.message for event in events if event.kind == "log"]
        assert logs == [f"the server no longer has job {expired} (it expired or the server restarted): "
                        "uploading the volume again"]
        assert_same_files(events[-1], expected)
        assert server.calls[("POST", "/jobs/{id}/prompt")] == 1 and server.calls[("POST", "/jobs")] == 2

        stranger = JobHandle(str(volume), str(tmp_path / "x"))  # a handle this runner never ran (another runner's)
        runner.rescore(stranger, str(tmp_path / "third"), VolumeRequest(prompt="metastasis"))
        events = finished(runner)
        assert [e.message for e in events if e.kind == "log"] == [
            "the server does not hold this volume for this runner: uploading it again"]
        assert server.calls[("POST", "/jobs")] == 3 and len(server_job_ids(server)) == 1
        runner.shutdown()
        assert leftover_files(server.app.state.jobs.work_root) == []


def test_cancel_during_a_reprompt_keeps_the_previous_job_for_the_next_one(tmp_path, volume):
    expected = stand_in_executor(volume, tmp_path / "expected", VolumeRequest(prompt="hypodense liver lesion"))
    with counting_server(tmp_path) as server:
        runner, first, _ = first_run(server, volume, tmp_path)
        kept = server_job_ids(server)

        runner.rescore(first, str(tmp_path / "cancelled"), VolumeRequest(prompt="wait-for-cancel"))
        seen, deadline = [], time.monotonic() + 10
        while not any(event.stage == "segmenting" for event in seen):
            assert time.monotonic() < deadline, [e.kind for e in seen]
            seen.extend(runner.poll())
            time.sleep(0.02)
        runner.cancel()
        assert events_until_final(runner)[-1].kind == "cancelled"
        assert not (tmp_path / "cancelled").exists()
        assert server_job_ids(server) == kept, "the cancelled job is deleted, the kept one is not"

        runner.rescore(first, str(tmp_path / "second"), VolumeRequest(prompt="hypodense liver lesion"))
        assert_same_files(finished(runner)[-1], expected)
        assert server.calls[("POST", "/jobs")] == 1 and server.calls[("POST", "/jobs/{id}/prompt")] == 2
        runner.shutdown()
        assert server_job_ids(server) == [] and leftover_files(server.app.state.jobs.work_root) == []


def test_reprompt_errors_are_one_line(tmp_path, volume):
    with start_server(tmp_path) as server, ServerClient(server.url, token=TOKENS["alice"], retries=0) as client:
        failed = client.submit(volume, VolumeRequest(prompt="fail"))
        assert client.wait(failed["id"], poll_s=0.2)["state"] == "failed"
        with pytest.raises(UserError, match=r"^the server answered 409: the job is failed; only a finished \('done'\) job"):
            client.reprompt(failed["id"], VolumeRequest(prompt="x"))
        client.delete(failed["id"])
        with pytest.raises(JobNotFound, match="^the server has no such job .expired, deleted, or another token's.: no such job"):
            client.reprompt(failed["id"], VolumeRequest(prompt="x"))


def test_a_reprompt_with_random_tiny_is_scored_from_the_servers_cache_and_equals_a_local_run(tmp_path, tiny_segmenter):
    """The real engine behind the server: the re-prompt's files equal a local run of that prompt byte for byte,
    and its provenance says "memory hit" with no engine pass (what the Slicer Logic's cache note reads)."""
    import json

    from ZeroShotDiffusionSegLib.server.cli import build_executor, engine_info_provider
    from ZeroShotDiffusionSegLib.volume import run_volume
    from test_server_support import make_volume

    volume = make_volume(tmp_path / "ct.nrrd", seed=3, shape=(2, 24, 24))
    request = VolumeRequest(prompt="hypodense liver lesion", batch_size=1)
    local = run_volume(volume, tmp_path / "local", tiny_segmenter, request)
    with counting_server(tmp_path, executors=[build_executor(tiny_segmenter)],
                         info=engine_info_provider(tiny_segmenter, "cpu")) as server:
        runner, first, first_done = first_run(server, volume, tmp_path, VolumeRequest(prompt="liver tumor", batch_size=1))
        first_files = first_done.files
        runner.rescore(first, str(tmp_path / "second"), request)
        done = finished(runner)[-1]
        runner.shutdown()
        assert server.calls[("POST", "/jobs")] == 1 and leftover_files(server.app.state.jobs.work_root) == []
    assert_same_files(done, local)
    first_runtime = json.loads(open(first_files["provenance"]).read())["runtime"]
    runtime = json.loads(open(done.files["provenance"]).read())["runtime"]
    assert (first_runtime["query_cache"], first_runtime["engine_passes"]) == ("stored", 2)
    assert (runtime["query_cache"], runtime["engine_passes"]) == ("memory hit", 0)


def test_shutdown_after_the_server_went_away_returns(tmp_path, volume):
    with start_server(tmp_path) as server:
        runner = RemoteRunner(server.url, token=TOKENS["alice"], poll_s=0.2)
        runner._client_factory = lambda: ServerClient(server.url, token=TOKENS["alice"], retries=0)
        runner.start(str(volume), str(tmp_path / "first"), VolumeRequest(prompt="liver tumor"))
        finished(runner)
    runner.shutdown()  # the kept job's DELETE cannot reach the server: nothing raised, the job expires there
    assert not runner.busy
