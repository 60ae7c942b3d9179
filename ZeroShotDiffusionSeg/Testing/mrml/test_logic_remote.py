"""The Logic with the real RemoteRunner and a real server on 127.0.0.1: a new prompt on the same volume is
re-prompted on the server (no second upload) and the cache note reads the server's provenance as it reads
the local worker's. The server's executor is the stand-in of the server tests, with the query-cache field
of the real engine's provenance (Testing/pytest/test_server_runner_rescore.py shows the real engine's)."""

import hashlib
import json
import sys
import time
from pathlib import Path

import pytest
from ZeroShotDiffusionSegLib.runners.remote import RemoteRunner

from scene_builders import oblique_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pytest"))
from test_server_runner_rescore import counting_server  # noqa: E402
from test_server_support import TOKENS, leftover_files, stand_in_executor  # noqa: E402


def caching_stand_in():
    """The stand-in executor, whose provenance says "memory hit" for a volume it has seen, as run_volume's does."""
    seen = set()

    def execute(input_path, out_dir, request, progress=None, cancel=None):
        result = stand_in_executor(input_path, out_dir, request, progress, cancel)
        digest = hashlib.sha256(Path(input_path).read_bytes()).hexdigest()
        hit = digest in seen
        seen.add(digest)
        provenance = json.loads(result.files["provenance"].read_text())
        provenance["runtime"] = {"query_cache": "memory hit" if hit else "stored",
                                 "timings_s": {"read": 0.1, "segment": 0.2 if hit else 9.0, "segment_per_slice": 0.75}}
        result.files["provenance"].write_text(json.dumps(provenance))
        return result

    return execute


@pytest.fixture
def remote_logic(tmp_path):
    import ZeroShotDiffusionSeg

    with counting_server(tmp_path, executors=[caching_stand_in()]) as server:
        logic = ZeroShotDiffusionSeg.ZeroShotDiffusionSegLogic(
            runnerFactory=lambda settings: RemoteRunner(server.url, token=TOKENS["alice"], poll_s=0.2))
        logic.server = server
        yield logic
        logic.shutdown()


def run_to_result(logic, parameters):
    job_id = logic.start(parameters, logic.settingsFrom(parameters))
    events, deadline = [], time.monotonic() + 15
    while not (events and events[-1].final):
        assert time.monotonic() < deadline, [event.kind for event in events]
        events.extend(logic.poll())
        time.sleep(0.02)
    assert events[-1].kind == "done" and events[-1].job_id == job_id, [(e.kind, e.message) for e in events]
    logic.loadResult(events[-1].files)
    return events


def test_a_new_prompt_is_reprompted_on_the_server_without_a_second_upload(remote_logic):
    logic, server = remote_logic, remote_logic.server
    parameters = logic.getParameterNode()
    parameters.inputVolume, parameters.prompt = oblique_volume(), "liver tumor"
    first = run_to_result(logic, parameters)
    assert logic.cacheNote(first[-1].files) is None

    parameters.prompt = "hypodense liver lesion"
    second = run_to_result(logic, parameters)
    assert server.calls[("POST", "/jobs")] == 1 and server.calls[("POST", "/jobs/{id}/prompt")] == 1
    assert logic.cacheNote(second[-1].files) == "re-scored from cache in 0.3 s"
    assert not [event for event in second if event.kind == "log"]
    assert json.loads(Path(second[-1].files["provenance"]).read_text())["request"]["prompt"] == "hypodense liver lesion"

    parameters.klThreshold = 0.9  # a setting of the pass: exported and uploaded again
    run_to_result(logic, parameters)
    assert server.calls[("POST", "/jobs")] == 2 and server.calls[("POST", "/jobs/{id}/prompt")] == 1
    logic.shutdown()
    assert leftover_files(server.app.state.jobs.work_root) == []
