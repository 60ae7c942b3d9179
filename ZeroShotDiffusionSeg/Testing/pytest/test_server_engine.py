"""The server with the real engine (random:tiny) and the real run_volume: what comes back
over HTTP equals a local run byte for byte, apart from timings and the input's path."""

import json

from ZeroShotDiffusionSegLib.server.cli import build_executor, engine_info_provider
from ZeroShotDiffusionSegLib.server.client import ServerClient, run_remote_job
from ZeroShotDiffusionSegLib.volume import run_volume
from ZeroShotDiffusionSegLib.volume.request import VolumeRequest
from test_server_support import TOKENS, leftover_files, make_volume, start_server


def comparable_provenance(path):
    """Provenance without what legitimately differs between two runs of the same job: the
    stage timings, whether the query cache was used, and the input's file name (the server reads
    its own private copy; the checksum, size and geometry beside it must still agree)."""
    data = json.loads(path.read_text())
    data["runtime"].pop("query_cache")
    data["runtime"].pop("timings_s")
    data["runtime"].pop("engine_timings_s")
    data["input"].pop("name")
    return data


def test_round_trip_with_random_tiny_equals_a_local_run(tmp_path, tiny_segmenter):
    volume = make_volume(tmp_path / "ct.nii.gz", seed=3, shape=(2, 24, 24))  # two slices: one engine pass each
    request = VolumeRequest(prompt="liver tumor", batch_size=1)
    local = run_volume(volume, tmp_path / "local", tiny_segmenter, request)
    executor = build_executor(tiny_segmenter)
    with start_server(tmp_path, executors=[executor], info=engine_info_provider(tiny_segmenter, "cpu")) as server, \
            ServerClient(server.url, token=TOKENS["bob"]) as client:
        info = client.handshake()
        assert info["model_id"] == "random:tiny" and info["device"] == "cpu" and info["gpu_memory"] is None
        assert info["provenance"]["weight_sha256"] == tiny_segmenter.provenance()["weight_sha256"]
        remote = run_remote_job(client, volume, tmp_path / "remote", request, poll_s=0.5)
        work_root = server.app.state.jobs.work_root
        assert leftover_files(work_root) == []
    for name in ("labels", "score", "lesions"):
        assert remote.files[name].read_bytes() == local.files[name].read_bytes(), name
    assert comparable_provenance(remote.files["provenance"]) == comparable_provenance(local.files["provenance"])
    assert remote.lesions == json.loads(json.dumps(local.lesions)) and remote.messages == local.messages
    assert not work_root.exists()


def test_zsdseg_serve_starts_serves_and_cleans_up_on_sigint(tmp_path):
    """The real command line: token file, model loaded once at start, /info, and on Ctrl-C a
    clean exit that leaves no temporary files."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    token_file = tmp_path / "tokens"
    token_file.write_text(f"alice:{TOKENS['alice']}\n")
    token_file.chmod(0o600)
    with socket.socket() as probe:  # a free port; the tiny window before serve binds it is acceptable here
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "ZeroShotDiffusionSegLib.cli", "serve", "--model", "random:tiny", "--device", "cpu",
               "--port", str(port), "--token-file", str(token_file), "--work-dir", str(tmp_path / "work")]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "zsdseg serve did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        info = httpx.get(f"http://127.0.0.1:{port}/info", headers={"Authorization": f"Bearer {TOKENS['alice']}"}).json()
        assert (info["model_id"], info["device"], info["workers"]) == ("random:tiny", "cpu", 1)
        folder, lock = sorted(os.listdir(tmp_path / "work"))  # the server's private directory, and its lock beside it
        assert lock == folder + ".lock"
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=60)[0]
    assert server.returncode == 0, output
    assert "serving on http://127.0.0.1" in output and TOKENS["alice"] not in output
    assert os.listdir(tmp_path / "work") == []


def test_a_pseudo_healthy_job_returns_healthy_and_residual_and_a_plain_one_does_not(tmp_path):
    """The two extra results exist only for a request that asks for them; each comes back byte for byte
    as a local run writes it (stand-in inpainter: the server's mechanics, not the model)."""
    import dataclasses

    import httpx

    from test_volume_fixtures import sphere_volume, write
    from test_volume_pseudo_healthy import HealthySegmenter, request

    volume = write(sphere_volume(noise_hu=10, air_slices=(0, 11))[0], tmp_path / "sphere.nrrd")
    local = run_volume(volume, tmp_path / "local", HealthySegmenter(), request())
    with start_server(tmp_path, executors=[build_executor(HealthySegmenter())]) as server, \
            ServerClient(server.url, token=TOKENS["bob"]) as client:
        remote = run_remote_job(client, volume, tmp_path / "remote", request(), poll_s=0.2)
        plain = run_remote_job(client, volume, tmp_path / "plain", dataclasses.replace(request(), pseudo_healthy=None),
                               keep_on_server=True, poll_s=0.2)
        job_id = client.list_jobs()[-1]["id"]
        missing = httpx.get(f"{server.url}/jobs/{job_id}/results/healthy",
                            headers={"Authorization": f"Bearer {TOKENS['bob']}"})
    assert sorted(remote.files) == ["healthy", "labels", "lesions", "provenance", "residual", "score"]
    for name in ("healthy", "residual", "labels", "score", "lesions"):
        assert remote.files[name].read_bytes() == local.files[name].read_bytes(), name
    assert sorted(plain.files) == ["labels", "lesions", "provenance", "score"]
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["labels.nrrd", "lesions.csv", "provenance.json", "score.nrrd"]
    assert missing.status_code == 404 and missing.json()["detail"] == "the job has no healthy result"


def test_clients_of_protocol_1_0_are_not_offered_the_pseudo_healthy_results_and_unknown_names_are_skipped(tmp_path, monkeypatch):
    """A 1.0 client knows four result names: a 1.1 server lists only those to it (a 1.0 client stops at an unknown
    name). A client that meets names it does not know (a newer server) downloads the rest and says what it skipped;
    one that asked for pseudo_healthy and did not get the volumes says why."""
    import httpx

    from test_volume_fixtures import sphere_volume, write
    from test_volume_pseudo_healthy import HealthySegmenter, request
    from ZeroShotDiffusionSegLib.server import client as client_module

    volume = write(sphere_volume(noise_hu=10, air_slices=(0, 11))[0], tmp_path / "sphere.nrrd")
    with start_server(tmp_path, executors=[build_executor(HealthySegmenter())]) as server, \
            ServerClient(server.url, token=TOKENS["bob"]) as client:
        run_remote_job(client, volume, tmp_path / "kept", request(), keep_on_server=True, poll_s=0.2)
        job_id = client.list_jobs()[0]["id"]

        def listed(version):
            headers = {"Authorization": f"Bearer {TOKENS['bob']}", **({"X-ZSDSeg-Protocol": version} if version else {})}
            return httpx.get(f"{server.url}/jobs/{job_id}", headers=headers).json()["results"]

        assert listed("1.0") == listed("1") == ["labels", "lesions", "provenance", "score"]
        assert listed("1.1") == listed(None) == ["healthy", "labels", "lesions", "provenance", "residual", "score"]
        old = {"Authorization": f"Bearer {TOKENS['bob']}", "X-ZSDSeg-Protocol": "1.0"}
        assert httpx.get(f"{server.url}/jobs", headers=old).json()[0]["results"] == listed("1.0")  # the list too
        cancelled = httpx.post(f"{server.url}/jobs/{job_id}/cancel", headers=old).json()  # a done job stays done
        assert cancelled["state"] == "done" and cancelled["results"] == listed("1.0")

        older = {name: file for name, file in client_module.RESULT_FILES.items() if name != "residual"}
        monkeypatch.setattr(client_module, "RESULT_FILES", older)  # as a client that does not know "residual"
        result = run_remote_job(client, volume, tmp_path / "older", request(), poll_s=0.2)
    assert sorted(result.files) == ["healthy", "labels", "lesions", "provenance", "score"]
    assert "the server also offers residual, which this client does not know; not downloaded" in result.messages
    assert not any("did not return the pseudo-healthy volumes" in message for message in result.messages)


def test_a_server_that_does_not_list_the_pseudo_healthy_volumes_is_named_in_the_messages(tmp_path, monkeypatch):
    """As a 1.0 server answers a pseudo_healthy request: the four results only. The client gets them and says
    why the two volumes are missing (the Slicer panel shows these messages in its log)."""
    from test_volume_fixtures import sphere_volume, write
    from test_volume_pseudo_healthy import HealthySegmenter, request
    from ZeroShotDiffusionSegLib.server import app as app_module

    monkeypatch.setattr(app_module, "results_known_to", lambda version: ("labels", "lesions", "provenance", "score"))
    volume = write(sphere_volume(noise_hu=10, air_slices=(0, 11))[0], tmp_path / "sphere.nrrd")
    with start_server(tmp_path, executors=[build_executor(HealthySegmenter())]) as server, \
            ServerClient(server.url, token=TOKENS["bob"]) as client:
        result = run_remote_job(client, volume, tmp_path / "out", request(), poll_s=0.2)
    assert sorted(result.files) == ["labels", "lesions", "provenance", "score"]
    assert ("the server (protocol 1.1) did not return the pseudo-healthy volumes (healthy.nrrd, residual.nrrd); the "
            "segments are its refined selection") in result.messages
