"""POST /jobs/{id}/prompt: a new job on a finished job's volume, without a new upload."""

import httpx

from ZeroShotDiffusionSegLib.volume.request import VolumeRequest
from test_server_api import ALICE, BOB, submit_raw, wait_until
from test_server_support import leftover_files, stand_in_executor, start_server, volume  # noqa: F401


def state_of(url, job_id):
    return httpx.get(f"{url}/jobs/{job_id}", headers=ALICE).json()["state"]


def test_reprompt_makes_a_new_job_on_the_same_volume_and_keeps_the_first(tmp_path, volume):
    expected = stand_in_executor(volume, tmp_path / "local", VolumeRequest(prompt="hypodense liver lesion"))
    with start_server(tmp_path) as server:
        url = server.url
        first = submit_raw(url, volume, request='{"prompt": "liver tumor"}').json()
        wait_until(lambda: state_of(url, first["id"]) == "done", what="the first job")
        before = httpx.get(f"{url}/jobs/{first['id']}/results/labels", headers=ALICE).content

        as_bob = httpx.post(f"{url}/jobs/{first['id']}/prompt", headers=BOB, data={"request": '{"prompt": "x"}'})
        assert as_bob.status_code == 404
        bad = httpx.post(f"{url}/jobs/{first['id']}/prompt", headers=ALICE, data={"request": '{"prompt": "a", "normal_prompt": " "}'})
        assert bad.status_code == 400 and "--normal-prompt is empty" in bad.json()["detail"]

        answer = httpx.post(f"{url}/jobs/{first['id']}/prompt", headers=ALICE,
                            data={"request": '{"prompt": "hypodense liver lesion"}'})
        assert answer.status_code == 202, answer.text
        second = answer.json()
        assert second["id"] != first["id"] and answer.headers["Location"] == f"/jobs/{second['id']}"
        wait_until(lambda: state_of(url, second["id"]) == "done", what="the re-prompt")
        for name in ("labels", "score", "lesions"):
            got = httpx.get(f"{url}/jobs/{second['id']}/results/{name}", headers=ALICE).content
            assert got == expected.files[name].read_bytes(), name
        assert httpx.get(f"{url}/jobs/{first['id']}/results/labels", headers=ALICE).content == before
        for job in (first, second):
            assert httpx.delete(f"{url}/jobs/{job['id']}", headers=ALICE).status_code == 204
        assert leftover_files(server.app.state.jobs.work_root) == []
        failed = submit_raw(url, volume, request='{"prompt": "fail"}').json()
        wait_until(lambda: state_of(url, failed["id"]) == "failed", what="the failing job")
        refused = httpx.post(f"{url}/jobs/{failed['id']}/prompt", headers=ALICE, data={"request": '{"prompt": "x"}'})
        assert refused.status_code == 409 and "only a finished ('done') job" in refused.json()["detail"]
        gone = httpx.post(f"{url}/jobs/{first['id']}/prompt", headers=ALICE, data={"request": '{"prompt": "x"}'})
        assert gone.status_code == 404
