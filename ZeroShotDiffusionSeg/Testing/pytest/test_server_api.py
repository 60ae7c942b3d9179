"""The HTTP API against a real uvicorn server on 127.0.0.1, with the deterministic stand-in
executor (the engine-backed round trip is in test_server_engine.py)."""

import json
import threading
import time

import httpx
import pytest

from ZeroShotDiffusionSegLib.errors import Cancelled, UserError
from ZeroShotDiffusionSegLib.server.client import IncompatibleServer, ServerClient, ServerUnavailable, run_remote_job
from ZeroShotDiffusionSegLib.volume.request import VolumeRequest
from test_server_support import (TOKENS, leftover_files, make_volume, stand_in_executor, start_server, volume,  # noqa: F401
                                 without_timings)

ALICE = {"Authorization": f"Bearer {TOKENS['alice']}"}
BOB = {"Authorization": f"Bearer {TOKENS['bob']}"}


def wait_until(condition, timeout_s=10.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def submit_raw(url, volume_path, headers=ALICE, request='{"prompt": "tumor"}', filename=None):
    with open(volume_path, "rb") as handle:
        return httpx.post(f"{url}/jobs", headers=headers, data={"request": request},
                          files={"volume": (filename or volume_path.name, handle)})


def test_openapi_schema_lists_every_route(tmp_path):
    server = start_server(tmp_path)
    schema = server.app.openapi()
    documented = {(path, method.upper()) for path, item in schema["paths"].items() for method in item}
    routes = {(route.path, method) for route in server.app.routes if hasattr(route, "methods") and route.include_in_schema
              for method in route.methods - {"HEAD"}}
    assert routes == documented
    assert {("/health", "GET"), ("/info", "GET"), ("/jobs", "POST"), ("/jobs/{job_id}", "GET"), ("/jobs/{job_id}/cancel", "POST"),
            ("/jobs/{job_id}", "DELETE"), ("/jobs/{job_id}/results/{name}", "GET")} <= documented
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    upload = schema["paths"]["/jobs"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload


def test_round_trip_equals_a_local_run_byte_for_byte(tmp_path, volume):
    request = VolumeRequest(prompt="liver tumor", params=VolumeRequest().params)
    local = stand_in_executor(volume, tmp_path / "local", request)
    events = []
    with start_server(tmp_path) as server, ServerClient(server.url, token=TOKENS["alice"]) as client:
        info = client.handshake()
        assert (info["model_id"], info["protocol_version"], info["queue_length"]) == ("stand-in", "1.1", 0)
        remote = run_remote_job(client, volume, tmp_path / "remote", request, progress=events.append, poll_s=0.5)
        assert client.list_jobs() == []  # deleted after download
        assert leftover_files(server.app.state.jobs.work_root) == []
    for name in ("labels", "score", "lesions"):
        assert remote.files[name].read_bytes() == local.files[name].read_bytes(), name
    assert without_timings(remote.files["provenance"].read_text()) == without_timings(local.files["provenance"].read_text())
    assert remote.lesions == local.lesions and remote.messages == ["stand-in ran"]
    stages = [event.stage for event in events]
    assert stages[0] == "upload" and stages[-1] == "download" and "done" in stages
    assert events[0].fraction <= 1.0 and [e.fraction for e in events if e.stage == "upload"][-1] == 1.0
    assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == ["labels.nrrd", "lesions.csv", "provenance.json", "score.nrrd"]
    assert leftover_files(tmp_path / "server-work") == []  # the server's private directory went with it


def test_eight_concurrent_clients_get_their_own_results(tmp_path):
    volumes = [make_volume(tmp_path / f"ct{index}.nii.gz", seed=index) for index in range(8)]
    expected = [stand_in_executor(v, tmp_path / f"local{i}", VolumeRequest(prompt=f"lesion {i}")) for i, v in enumerate(volumes)]
    outcomes, errors = {}, []

    def client_run(index, url):
        try:
            with ServerClient(url, token=TOKENS["alice" if index % 2 else "bob"]) as client:
                outcomes[index] = run_remote_job(client, volumes[index], tmp_path / f"remote{index}",
                                                 VolumeRequest(prompt=f"lesion {index}"), poll_s=0.5)
        except Exception as error:  # reported below with the index
            errors.append((index, repr(error)))

    with start_server(tmp_path, executors=[stand_in_executor, stand_in_executor]) as server:
        threads = [threading.Thread(target=client_run, args=(i, server.url)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert sorted(outcomes) == list(range(8))
    for index, result in outcomes.items():
        for name in ("labels", "score", "lesions"):
            assert result.files[name].read_bytes() == expected[index].files[name].read_bytes(), (index, name)
        assert result.lesions[0]["mean_score"] == len(f"lesion {index}") / 100
        assert json.loads(result.files["provenance"].read_text())["request"]["prompt"] == f"lesion {index}"
    assert len({outcomes[i].files["labels"].read_bytes() for i in range(8)}) > 1  # the volumes differ, so must results


def test_cancel_mid_job_and_in_the_queue(tmp_path, volume):
    with start_server(tmp_path) as server, httpx.Client(base_url=server.url, headers=ALICE) as http:
        running = submit_raw(server.url, volume, request='{"prompt": "wait-for-cancel"}').json()
        queued = submit_raw(server.url, volume).json()
        wait_until(lambda: http.get(f"/jobs/{running['id']}").json()["stage"] == "segmenting", what="the job to run")
        status = http.get(f"/jobs/{queued['id']}").json()
        assert (status["state"], status["queue_position"]) == ("queued", 1)
        assert http.get("/info").json()["queue_length"] == 1

        cancelled = http.post(f"/jobs/{queued['id']}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
        assert http.post(f"/jobs/{running['id']}/cancel").status_code == 202
        wait_until(lambda: http.get(f"/jobs/{running['id']}").json()["state"] == "cancelled", 5, "the cancel")
        final = http.get(f"/jobs/{running['id']}").json()
        assert final["fraction"] < 1.0 and final["results"] == []
        refused = http.get(f"/jobs/{running['id']}/results/labels")
        assert refused.status_code == 409 and "cancelled" in refused.json()["detail"]
        assert leftover_files(server.app.state.jobs.work_root) == []  # a cancelled job keeps no files

        # The client's cancel Event: cancels on the server and raises Cancelled.
        cancel = threading.Event()
        with ServerClient(server.url, token=TOKENS["alice"]) as client:
            threading.Timer(0.3, cancel.set).start()
            with pytest.raises(Cancelled):
                run_remote_job(client, volume, tmp_path / "out", VolumeRequest(prompt="wait-for-cancel"), cancel=cancel, poll_s=0.2)
        assert not (tmp_path / "out").exists()
        wait_until(lambda: server.app.state.jobs.counts()["running"] == 0, 5, "the worker to be free")
        assert [status["state"] for status in http.get("/jobs").json()] == ["cancelled", "cancelled"]  # the third was deleted


def test_tokens_wrong_missing_and_another_users(tmp_path, volume):
    with start_server(tmp_path) as server:
        url = server.url
        assert httpx.get(f"{url}/health").status_code == 200  # the one public route
        missing = httpx.get(f"{url}/info")
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
        assert missing.json() == {"detail": "missing bearer token: send 'Authorization: Bearer <token>'"}
        wrong = httpx.get(f"{url}/info", headers={"Authorization": "Bearer " + "x" * 26})
        assert wrong.status_code == 403 and wrong.json() == {"detail": "invalid token"}
        assert httpx.get(f"{url}/openapi.json").status_code == 401
        assert submit_raw(url, volume, headers={}).status_code == 401  # refused before the upload is read

        job = submit_raw(url, volume).json()
        wait_until(lambda: httpx.get(f"{url}/jobs/{job['id']}", headers=ALICE).json()["state"] == "done", what="the job")
        for method, path in (("GET", ""), ("GET", "/results/labels"), ("POST", "/cancel"), ("DELETE", "")):
            as_bob = httpx.request(method, f"{url}/jobs/{job['id']}{path}", headers=BOB)
            assert as_bob.status_code == 404, (method, path)
            assert as_bob.json() == {"detail": "no such job (it may have expired or been deleted)"}
            as_nobody = httpx.request(method, f"{url}/jobs/{job['id']}{path}", headers={"Authorization": "Bearer " + "y" * 20})
            assert as_nobody.status_code == 403 and "detail" in as_nobody.json() and len(as_nobody.content) < 100
        assert httpx.get(f"{url}/jobs", headers=BOB).json() == []
        # Alice's job is untouched by Bob's attempts.
        assert httpx.get(f"{url}/jobs/{job['id']}/results/labels", headers=ALICE).status_code == 200
        with ServerClient(url, token="z" * 20) as client, pytest.raises(UserError, match="refused the token"):
            client.handshake()
        with ServerClient(url) as client, pytest.raises(UserError, match="needs a token: pass --token-file"):
            client.handshake()


def test_bad_uploads_get_clear_4xx_and_the_server_keeps_serving(tmp_path, volume):
    big = make_volume(tmp_path / "big.nrrd", shape=(40, 64, 64))
    data = volume.read_bytes()
    truncated = tmp_path / "cut.nrrd"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.nrrd"
    text.write_text("patient notes, not an image\n" * 20)
    with start_server(tmp_path, max_upload_bytes=60_000) as server:
        assert big.stat().st_size > 60_000
        oversize = submit_raw(server.url, big)
        assert oversize.status_code == 413 and "larger than this server's limit of 0.1 MB" in oversize.json()["detail"]
        assert submit_raw(server.url, text).json() == {"detail": "the upload is not a readable NRRD/NIfTI/MHA volume (or it is truncated)"}
        cut = submit_raw(server.url, truncated)
        # ITK's own words may quote sizes and paths: a client gets the plain reason only.
        assert cut.status_code == 400 and cut.json()["detail"] == "the upload is not a readable NRRD/NIfTI/MHA volume (or it is truncated)"
        no_prompt = submit_raw(server.url, volume, request="{}")  # the pipeline's own request check, before queueing
        assert no_prompt.status_code == 400 and no_prompt.json()["detail"].startswith("a volume needs --prompt TEXT")
        seed_outside = submit_raw(server.url, volume, request='{"seeds": [[900, 900, 900]]}')
        assert seed_outside.status_code == 400 and "server-work" not in seed_outside.text, seed_outside.text
        wrong_type = submit_raw(server.url, volume, filename="../../etc/passwd")
        assert wrong_type.status_code == 415 and "unsupported volume file type 'passwd'" in wrong_type.json()["detail"]
        bad_request = submit_raw(server.url, volume, request='{"prompt": 1, "zoom": 2}')
        assert bad_request.status_code == 400 and "unknown fields ['zoom']" in bad_request.json()["detail"]
        # A chunked body has no Content-Length: the limit is enforced while it arrives.
        chunked = httpx.post(f"{server.url}/jobs", headers={**ALICE, "Content-Type": "multipart/form-data; boundary=b"},
                             content=iter([b"--b\r\nContent-Disposition: form-data; name=\"volume\"; filename=\"v.nrrd\"\r\n\r\n"]
                                          + [b"0" * 10_000] * 10 + [b"\r\n--b--\r\n"]))
        assert chunked.status_code == 413
        with ServerClient(server.url, token=TOKENS["alice"]) as client:
            client.handshake()
            with pytest.raises(UserError, match=r"big.nrrd is 0.\d MB; the server accepts at most 0.1 MB"):
                client.submit(big, VolumeRequest(prompt="x"))
            result = run_remote_job(client, volume, tmp_path / "after", VolumeRequest(prompt="still serving"), poll_s=0.5)
        assert result.lesions[0]["mean_score"] == len("still serving") / 100
        assert leftover_files(server.app.state.jobs.work_root) == []  # refused uploads left nothing behind


def test_failed_jobs_say_why_and_a_full_queue_says_when(tmp_path, volume):
    with start_server(tmp_path, max_queued=1) as server, httpx.Client(base_url=server.url, headers=ALICE) as http:
        failed = submit_raw(server.url, volume, request='{"prompt": "fail"}').json()
        crashed = submit_raw(server.url, volume, request='{"prompt": "crash"}').json()
        for job, error in ((failed, "stand-in: nothing to segment in this volume"),
                           (crashed, "internal error while running the job (details are in the server log)")):
            wait_until(lambda: http.get(f"/jobs/{job['id']}").json()["state"] == "failed", what="the job to fail")
            status = http.get(f"/jobs/{job['id']}").json()
            assert (status["error"], status["results"], status["lesions"]) == (error, [], [])
        assert leftover_files(server.app.state.jobs.work_root) == []  # a failed job keeps no files

        blocker = submit_raw(server.url, volume, request='{"prompt": "wait-for-cancel"}').json()
        wait_until(lambda: http.get(f"/jobs/{blocker['id']}").json()["state"] == "running", what="the job to start")
        assert submit_raw(server.url, volume).status_code == 202  # the one queue place
        full = submit_raw(server.url, volume)
        assert full.status_code == 503 and full.headers["Retry-After"] == "30"
        assert full.json() == {"detail": "the server's queue is full (1 jobs); try again later"}
        http.post(f"/jobs/{blocker['id']}/cancel")


def test_results_expire_after_the_ttl(tmp_path, volume):
    with start_server(tmp_path, result_ttl_s=0.3) as server, httpx.Client(base_url=server.url, headers=ALICE) as http:
        job = submit_raw(server.url, volume).json()
        wait_until(lambda: http.get(f"/jobs/{job['id']}").status_code == 404, what="the job to expire")
        assert leftover_files(server.app.state.jobs.work_root) == []


def test_long_poll_returns_on_change_and_delete_removes_the_job(tmp_path, volume):
    with start_server(tmp_path) as server, httpx.Client(base_url=server.url, headers=ALICE) as http:
        job = submit_raw(server.url, volume, request='{"prompt": "wait-for-cancel"}').json()
        started = time.monotonic()
        changed = http.get(f"/jobs/{job['id']}", params={"wait_s": 10, "since": job["version"]}).json()
        assert changed["version"] != job["version"] and time.monotonic() - started < 5
        assert http.delete(f"/jobs/{job['id']}").status_code == 204
        assert http.get(f"/jobs/{job['id']}").status_code == 404
        wait_until(lambda: leftover_files(server.app.state.jobs.work_root) == [], what="the deleted job's files to go")


def test_logs_hold_no_tokens_and_no_image_data(tmp_path, volume, caplog, monkeypatch):
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(logging.getLogger("uvicorn.access"), "propagate", True)  # to reach caplog
    monkeypatch.setattr(logging.getLogger("uvicorn.error"), "propagate", True)
    server = start_server(tmp_path, uvicorn_options={"log_config": None, "log_level": "debug", "access_log": True})
    with server, ServerClient(server.url, token=TOKENS["alice"]) as client:
        run_remote_job(client, volume, tmp_path / "out", VolumeRequest(prompt="tumor"), poll_s=0.5)
        httpx.get(f"{server.url}/info", headers={"Authorization": "Bearer " + "w" * 24})
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "queued for alice" in text and '"POST /jobs HTTP/1.1" 202' in text and '"GET /info HTTP/1.1" 403' in text
    for secret in (*TOKENS.values(), "w" * 24):
        assert secret not in text
    payload = volume.read_bytes()
    assert payload[-64:].decode("latin-1") not in text and max(len(r.getMessage()) for r in caplog.records) < 1000


def test_version_handshake_refuses_an_incompatible_server(tmp_path, monkeypatch):
    with start_server(tmp_path) as server:
        refused = httpx.get(f"{server.url}/info", headers={**ALICE, "X-ZSDSeg-Protocol": "2.3"})
        assert refused.status_code == 426 and "this server speaks protocol 1.1" in refused.json()["detail"]
    monkeypatch.setattr("ZeroShotDiffusionSegLib.server.app.PROTOCOL_VERSION", "2.0")
    with start_server(tmp_path) as server, ServerClient(server.url, token=TOKENS["alice"]) as client:
        with pytest.raises(IncompatibleServer, match="speaks protocol 2.0, this client 1.1 .* same major version"):
            client.handshake()

    from fastapi import FastAPI
    from test_server_support import ServerThread

    with ServerThread(FastAPI()) as other, ServerClient(other.url) as client:
        with pytest.raises(IncompatibleServer, match="does not answer like a zsdseg server"):
            client.handshake()


class CountingTransport(httpx.HTTPTransport):
    """Refuses the first ``failures`` requests as a down server would, then sends them."""

    def __init__(self, failures):
        super().__init__()
        self.failures, self.attempts = failures, 0

    def handle_request(self, request):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise httpx.ConnectError("connection refused", request=request)
        return super().handle_request(request)


def test_client_retries_connection_errors_then_gives_up(tmp_path):
    with start_server(tmp_path) as server:
        flaky = CountingTransport(failures=2)
        with ServerClient(server.url, token=TOKENS["alice"], retries=3, backoff_s=0.01, transport=flaky) as client:
            assert client.handshake()["model_id"] == "stand-in"
        assert flaky.attempts == 4  # two refused, then /health and /info
        closed_port = server.port
    down = CountingTransport(failures=0)
    with ServerClient(f"http://127.0.0.1:{closed_port}", retries=2, backoff_s=0.01, transport=down) as client:
        with pytest.raises(ServerUnavailable, match=f"cannot reach the zsdseg server at http://127.0.0.1:{closed_port} after 3 attempts"):
            client.health()
    assert down.attempts == 3


def test_upload_and_download_progress_callbacks(tmp_path, volume):
    uploads, downloads = [], []
    with start_server(tmp_path) as server, ServerClient(server.url, token=TOKENS["alice"]) as client:
        client.handshake()
        job = client.submit(volume, VolumeRequest(prompt="x"), upload_progress=lambda done, total: uploads.append((done, total)))
        assert client.wait(job["id"], poll_s=0.5)["state"] == "done"
        path = client.download(job["id"], "labels", tmp_path / "d" / "labels.nrrd", lambda d, t: downloads.append((d, t)))
    size = volume.stat().st_size
    assert uploads[-1] == (size, size) and all(0 < done <= size for done, _ in uploads)
    assert downloads[-1] == (path.stat().st_size, path.stat().st_size)
    assert [p.name for p in path.parent.iterdir()] == ["labels.nrrd"]  # no partial file left
