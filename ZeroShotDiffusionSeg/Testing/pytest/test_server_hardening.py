"""Against a real server on 127.0.0.1: an upload can make the server read nothing but itself,
its declared size is checked before any voxel is decoded, and every malformed request is a
4xx answer with one line of detail."""

import gzip
import os
import json
import zlib

import httpx
import numpy as np
import pytest

from test_server_support import TOKENS, leftover_files, make_volume, start_server, volume  # noqa: F401

ALICE = {"Authorization": f"Bearer {TOKENS['alice']}"}
# 4x4x4 voxels of varied values, so a volume built from it would pass every content check.
SECRET = bytes((37 * index + 11) % 251 for index in range(64 * 8))


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "private" / "token-secret.bin"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def post(url, name, content, request='{"prompt": "tumor"}'):
    return httpx.post(f"{url}/jobs", headers=ALICE, data={"request": request}, files={"volume": (name, content)}, timeout=30)


def assert_reveals_nothing(response, secret_path):
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    for leak in (str(secret_path), secret_path.name, "private", str(len(SECRET)), "fread", "every voxel is"):
        assert leak not in detail, (leak, detail)


def nrrd_header(data_file_line, pixel_type="uchar", sizes="4 4 4", extra=""):
    return (f"NRRD0004\ntype: {pixel_type}\ndimension: 3\nsizes: {sizes}\nspacings: 1 1 1\nencoding: raw\n"
            f"{extra}{data_file_line}\n").encode()


def metaimage_header(data_file_line, extra=""):
    return (f"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementSpacing = 1 1 1\nElementType = MET_UCHAR\n"
            f"{extra}{data_file_line}\n").encode()


def detached_uploads(secret_path):
    """(upload name, content): headers that point ITK at another file, in every spelling we know."""
    target, relative = str(secret_path), os.path.relpath(secret_path, "/")
    uploads = []
    for line in (f"data file: {target}", f"datafile: {target}", f"DATA FILE : {target}", f"Data\tFile:{target}",
                 f"data file: LIST\n{target}", f"data file: ../../../../../../../../{relative}",
                 f"data file: {target} 0 0 1", "data file:=" + target):
        for skip in ("", "byte skip: 128\n", "byte skip: -1\n"):
            uploads.append(("scan.nrrd", nrrd_header(line, extra=skip)))
    for line in (f"ElementDataFile = {target}", f"elementdatafile={target}", f"Element Data File = {target}",
                 "ElementDataFile = LIST\n" + target, f"ElementDataFile = ../../../../../../../{relative}"):
        for offset in ("", "HeaderSize = 64\n", "HeaderSize = -1\n"):
            uploads.append(("scan.mha", metaimage_header(line, extra=offset)))
    # The same headers under the other allowed names: the format comes from the content, not the name.
    uploads.append(("scan.nii", nrrd_header(f"data file: {target}")))
    uploads.append(("scan.mha", nrrd_header(f"data file: {target}")))
    uploads.append(("scan.nii.gz", gzip.compress(nrrd_header(f"data file: {target}"))))
    return uploads


def test_uploads_naming_another_file_are_refused_and_reveal_nothing(tmp_path, secret):
    with start_server(tmp_path) as server:
        for name, content in detached_uploads(secret):
            response = post(server.url, name, content)
            assert_reveals_nothing(response, secret)
            assert "separate data file" in response.json()["detail"] or "not a readable" in response.json()["detail"], \
                response.json()["detail"]
        assert leftover_files(server.app.state.jobs.work_root) == []


def test_a_detached_header_is_refused_before_itk_opens_anything(tmp_path, secret):
    """A FIFO as the 'data file': any open() of it would block the server; the answer is immediate."""
    fifo = tmp_path / "private" / "fifo"
    os.mkfifo(fifo)
    with start_server(tmp_path) as server:
        response = post(server.url, "scan.nrrd", nrrd_header(f"data file: {fifo}"))
        assert response.status_code == 400 and "separate data file" in response.json()["detail"]
        response = post(server.url, "scan.mha", metaimage_header(f"ElementDataFile = {fifo}"))
        assert response.status_code == 400 and "separate data file" in response.json()["detail"]


def test_the_declared_size_is_checked_before_decompressing(tmp_path):
    """The header promises 10x10x9 doubles; the body is not even valid gzip. The answer is the size limit
    (so nothing was decoded), with the limit and the reason."""
    header = nrrd_header("", pixel_type="double", sizes="10 10 9").replace(b"encoding: raw", b"encoding: gzip") + b"\n"
    with start_server(tmp_path, max_voxels=1000) as server:
        response = post(server.url, "bomb.nrrd", header + b"\x1f\x8b" + os.urandom(200))
        assert response.status_code == 400
        assert response.json()["detail"] == ("the volume's voxel data would take 7200 bytes decoded (10 x 10 x 9 voxels of 8 bytes); "
                                             "this server accepts at most 4000 (4 bytes x --max-voxels)")
        big = nrrd_header("", sizes="2000 2000 2000").replace(b"encoding: raw", b"encoding: gzip") + b"\n"
        response = post(server.url, "bomb.nrrd", big + zlib.compress(b"\0" * 100_000))
        assert response.status_code == 400 and "8000000000 voxels (2000 x 2000 x 2000); this server accepts at most 1000" \
            in response.json()["detail"]


def test_a_self_contained_metaimage_and_nrrd_are_accepted(tmp_path):
    import SimpleITK as sitk

    array = (np.random.default_rng(0).normal(40, 20, (6, 20, 24)) + 300 * (np.arange(24) > 12)).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    with start_server(tmp_path) as server:
        for name in ("ct.mha", "ct.nrrd", "ct.nii.gz"):
            sitk.WriteImage(image, str(tmp_path / name), name != "ct.mha")
            response = post(server.url, name, (tmp_path / name).read_bytes())
            assert response.status_code == 202, response.text


def test_an_all_air_upload_is_refused_with_400(tmp_path):
    import SimpleITK as sitk

    array = np.full((6, 20, 24), -1000, np.int16)
    array[0, 0, 0] = -990  # not constant: only air
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "air.nrrd"), True)
    with start_server(tmp_path) as server:
        response = post(server.url, "air.nrrd", (tmp_path / "air.nrrd").read_bytes())
    assert response.status_code == 400
    assert response.json()["detail"] == "no slice inside the ROI holds anything but air or a constant value; nothing to segment"


def test_a_pseudo_healthy_request_over_the_servers_step_limit_is_refused_before_it_queues(tmp_path, volume):
    """A token holder cannot book thousands of UNet passes per slice: steps x strength is capped by the server."""
    content = volume.read_bytes()
    heavy = json.dumps({"prompt": "tumor", "pseudo_healthy": {"steps": 1000, "strength": 1.0}})
    within = json.dumps({"prompt": "tumor", "pseudo_healthy": {"steps": 100, "strength": 0.5}})
    from ZeroShotDiffusionSegLib.server.client import ServerClient

    with start_server(tmp_path, max_healthy_steps=60) as server:
        refused = post(server.url, "ct.nrrd", content, request=heavy)
        accepted = post(server.url, "ct.nrrd", content, request=within)
        with ServerClient(server.url, token=TOKENS["alice"]) as client:
            assert client.wait(accepted.json()["id"], poll_s=0.1)["state"] == "done"
        reprompted = httpx.post(f"{server.url}/jobs/{accepted.json()['id']}/prompt", headers=ALICE, data={"request": heavy})
    message = ("pseudo_healthy would run 1000 denoising steps per slice (steps x strength); this server runs at most 60 "
               "(--max-healthy-steps)")
    assert refused.status_code == 400 and refused.json()["detail"] == message
    assert accepted.status_code == 202, accepted.text
    assert reprompted.status_code == 400 and reprompted.json()["detail"] == message  # no way round it by re-prompting


MALFORMED = [
    '{"seeds": "1,2,3"}', '{"seeds": [[1, 2]]}', '{"seeds": [["a", 1, 2]]}', '{"seeds": [[1e999, 0, 0]]}',
    '{"prompt": 5}', '{"prompt": ["a"]}', '{"window": 400}', '{"window": "nan/40"}', '{"axis": 2}', '{"axis": null}',
    '{"mode": ["seed"]}', '{"min_volume_mm3": "x"}', '{"min_volume_mm3": NaN}', '{"min_volume_mm3": -Infinity}',
    '{"batch_size": "4"}', '{"batch_size": 1.5}', '{"batch_size": 100000}', '{"roi_voxels": [[0, 0, 0]]}',
    '{"roi_voxels": "0,0,0,1,1,1"}', '{"roi_physical": [[0, 0, "z"], [1, 1, 1]]}', '{"params": null}', '{"params": []}',
    '{"params": {"iterations": 100000000}}', '{"params": {"grid_points": 100000}}', '{"params": {"timestep": -1}}',
    '{"binary": "yes"}', '{"coordinate_space": "XYZ"}', "[" * 50_000 + "]" * 50_000, '{"a": ' * 5000 + "1" + "}" * 5000,
    '"just a string"', "null", "{", '{"prompt": "tumor", "unknown": 1}',
]


@pytest.mark.parametrize("request_json", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_request_fields_are_400_with_one_line(tmp_path, volume, request_json):
    with start_server(tmp_path) as server:
        response = post(server.url, "ct.nrrd", volume.read_bytes(), request=request_json)
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and len(detail) <= 300
        assert leftover_files(server.app.state.jobs.work_root) == []


def test_fastapis_own_validation_errors_are_one_line(tmp_path, volume):
    with start_server(tmp_path) as server:
        job = post(server.url, "ct.nrrd", volume.read_bytes()).json()["id"]
        answers = [
            httpx.post(f"{server.url}/jobs", headers=ALICE, data={"request": "{}"}),  # no volume part
            httpx.get(f"{server.url}/jobs/{job}?wait_s=forever", headers=ALICE),
            httpx.get(f"{server.url}/jobs/{job}?wait_s=1e9", headers=ALICE),
            httpx.get(f"{server.url}/jobs/{job}/results/passwd", headers=ALICE),
        ]
    for response in answers:
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail, detail
    assert answers[0].json()["detail"] == "body volume: Field required"
    assert answers[1].json()["detail"].startswith("query wait_s: ")


def test_connections_that_never_finish_their_headers_are_closed(tmp_path, volume):
    import socket
    import time

    from ZeroShotDiffusionSegLib.server.connections import header_timeout_protocol

    options = {"http": header_timeout_protocol(0.5), "limit_concurrency": 50}
    with start_server(tmp_path, uvicorn_options=options) as server:
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        partial = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        partial.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        start = time.monotonic()
        assert idle.recv(100) == b"" and partial.recv(100) == b""  # closed by the server
        assert time.monotonic() - start < 5
        # A request whose headers arrived in time is served, and a slow upload's body is not cut off.
        assert httpx.get(f"{server.url}/health").status_code == 200
        assert post(server.url, "ct.nrrd", volume.read_bytes()).status_code == 202


def test_a_failed_jobs_error_does_not_show_the_servers_paths(tmp_path, volume):
    import time

    from ZeroShotDiffusionSegLib.errors import UserError

    def failing_executor(input_path, out_dir, request, progress=None, cancel=None):
        raise UserError(f"{input_path} could not be segmented (output {out_dir})")

    with start_server(tmp_path, executors=[failing_executor]) as server:
        job = post(server.url, "ct.nrrd", volume.read_bytes()).json()
        deadline = time.monotonic() + 10
        while (status := httpx.get(f"{server.url}/jobs/{job['id']}", headers=ALICE).json())["state"] != "failed":
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
    assert status["error"] == "the uploaded volume could not be segmented (output the job/out)"
    assert "server-work" not in json.dumps(status)
