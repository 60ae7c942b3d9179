"""`zsdseg batch`: manifest parsing, embedded and Ray runs with random:tiny on CPU, resume, failures per case.

One module (one local Ray cluster with 2 CPUs and no dashboard, started once for the module)."""

import csv
import json
import os
import sys
from pathlib import Path

import pytest

from test_volume_fixtures import sphere_volume, write
from ZeroShotDiffusionSegLib.cli import main

LIBRARY = Path(__file__).resolve().parents[2]
CASES = [f"case{n}" for n in range(5)]
OUTPUTS = ("labels.nrrd", "score.nrrd", "lesions.csv")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """As in a Ray actor with one CPU: float sums in torch depend on the thread count, so byte-for-byte
    comparisons between the embedded and the Ray runs need the same count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Five small volumes (different sizes and sphere places) and one unreadable file, with a manifest."""
    folder = tmp_path_factory.mktemp("cohort")
    rows = ["path,case_id,prompt"]
    for n, case_id in enumerate(CASES):
        image, _ = sphere_volume(size=(24 + 4 * n, 28, 3), centre_index=(12 + n, 14, 1), radius_mm=4 + n,
                                 spacing=(0.8, 0.9, 2.0), noise_hu=10)
        write(image, folder / f"v{n}.nrrd")
        rows.append(f"v{n}.nrrd,{case_id},{'lung tumor' if n % 2 else ''}")
    (folder / "broken.nrrd").write_text("not an image")
    rows.append("broken.nrrd,broken,")
    (folder / "cases.csv").write_text("\n".join(rows) + "\n")
    return folder


def batch(*argv):
    return main(["batch", *[str(a) for a in argv], "--prompt", "liver tumor", "--model", "random:tiny", "--device", "cpu",
                 "--progress", "none"])


def table(out: Path) -> dict:
    with open(out / "batch.csv", newline="") as handle:
        return {row["case_id"]: row for row in csv.DictReader(handle)}


def without_runtime(path: Path) -> dict:
    provenance = json.loads(path.read_text())
    provenance.pop("runtime")
    return provenance


@pytest.fixture(scope="module")
def embedded(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded")
    code = batch(cohort / "cases.csv", "--out-dir", out)
    return out, code


def test_five_done_one_failed_with_its_message(embedded):
    out, code = embedded
    assert code == 1
    rows = table(out)
    assert list(rows) == CASES + ["broken"]
    assert [rows[c]["status"] for c in CASES] == ["done"] * 5
    assert rows["broken"]["status"] == "failed" and "broken.nrrd is not a readable image" in rows["broken"]["error"]
    for case_id in CASES:
        assert int(rows[case_id]["lesions"]) >= 1 and float(rows[case_id]["total_volume_ml"]) > 0
        assert float(rows[case_id]["seconds"]) > 0
    assert not (out / "broken").exists()
    assert json.loads((out / "case1" / "provenance.json").read_text())["request"]["prompt"] == "lung tumor"
    assert json.loads((out / "case0" / "provenance.json").read_text())["request"]["prompt"] == "liver tumor"


def test_a_case_equals_what_segment_writes(cohort, embedded, tmp_path):
    out, _ = embedded
    single = tmp_path / "single"
    assert main(["segment", str(cohort / "v1.nrrd"), "--prompt", "lung tumor", "--out-dir", str(single),
                 "--model", "random:tiny", "--device", "cpu", "--progress", "none"]) == 0
    for name in OUTPUTS:
        assert (single / name).read_bytes() == (out / "case1" / name).read_bytes(), name
    assert without_runtime(single / "provenance.json") == without_runtime(out / "case1" / "provenance.json")


def test_rerun_skips_every_done_case_without_loading_the_model(cohort, embedded):
    out, _ = embedded
    stamps = {c: (out / c / "labels.nrrd").stat().st_mtime_ns for c in CASES}
    # only the failed case is tried again (and fails again); the done ones keep their files untouched
    code = main(["batch", str(cohort / "cases.csv"), "--out-dir", str(out), "--prompt", "liver tumor",
                 "--model", "random:tiny", "--progress", "none"])
    assert code == 1
    rows = table(out)
    assert [rows[c]["status"] for c in CASES] == ["skipped"] * 5 and rows["broken"]["status"] == "failed"
    assert stamps == {c: (out / c / "labels.nrrd").stat().st_mtime_ns for c in CASES}


def test_an_interrupted_batch_resumes_and_changed_parameters_rerun(cohort, embedded, tmp_path):
    out, _ = embedded
    resumed = tmp_path / "resumed"
    for case_id in CASES:
        (resumed / case_id).mkdir(parents=True)
        for name in (*OUTPUTS, "provenance.json"):
            (resumed / case_id / name).write_bytes((out / case_id / name).read_bytes())
    (resumed / "case2" / "provenance.json").unlink()  # killed before the last file landed
    (resumed / ".zsdseg-partial-99999-deadbeef").mkdir()  # a kill -9 leaves its staging folder
    (resumed / "case3" / ".zsdseg-partial-99999-cafe").mkdir()
    (resumed / "case3" / ".seg.dcm.99999.partial").write_bytes(b"half a file")
    (resumed / ".batch.csv.99999.partial").write_text("case_id\n")
    provenance = json.loads((resumed / "case4" / "provenance.json").read_text())
    provenance["request"]["min_volume_mm3"] = 5.0  # made with other parameters
    (resumed / "case4" / "provenance.json").write_text(json.dumps(provenance))
    assert batch(cohort / "cases.csv", "--out-dir", resumed) == 1
    rows = table(resumed)
    assert {c: rows[c]["status"] for c in CASES} == {"case0": "skipped", "case1": "skipped", "case2": "done",
                                                    "case3": "skipped", "case4": "done"}
    assert not list(resumed.glob(".zsdseg-partial-*")) and not list(resumed.glob("*/.zsdseg-partial-*"))
    assert not list(resumed.glob(".*.partial")) and not list(resumed.glob("*/.*.partial"))
    for case_id in ("case2", "case4"):
        assert (resumed / case_id / "labels.nrrd").read_bytes() == (out / case_id / "labels.nrrd").read_bytes()


def test_force_model_and_dicom_outputs_decide_whether_a_case_is_done(cohort, embedded):
    from ZeroShotDiffusionSegLib.cohort.cases import CaseOptions, is_done
    from ZeroShotDiffusionSegLib.cohort.manifest import Case
    from ZeroShotDiffusionSegLib.engine.types import SegmentationParams
    from ZeroShotDiffusionSegLib.volume.request import VolumeRequest

    out, _ = embedded
    stored = json.loads((out / "case0" / "provenance.json").read_text())["request"]
    request = VolumeRequest(**{**stored, "params": SegmentationParams(**stored["params"])})
    case = Case("case0", str(cohort / "v0.nrrd"), request)
    assert is_done(case, out / "case0", CaseOptions(model="random:tiny"))
    assert not is_done(case, out / "case0", CaseOptions(model="random:tiny", force=True))
    assert not is_done(case, out / "case0", CaseOptions(model="random:sd15"))
    assert not is_done(case, out / "case0", CaseOptions(model="random:tiny", dicom_seg=True))  # no seg.dcm yet
    assert not is_done(Case("case0", str(cohort / "v1.nrrd"), request), out / "case0", CaseOptions(model="random:tiny"))


def test_a_folder_of_volumes_and_per_case_errors(cohort, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "volumes"
    folder.mkdir()
    (folder / "a.nrrd").write_bytes((cohort / "v0.nrrd").read_bytes())
    (folder / "b.nrrd").write_bytes((cohort / "v1.nrrd").read_bytes())
    assert main(["batch", str(folder), "--out-dir", str(tmp_path / "o"), "--model", "random:tiny"]) == 2
    assert "needs --prompt" in capsys.readouterr().err
    manifest = tmp_path / "seeds.csv"
    manifest.write_text(f"path,seed_ras\n{folder / 'a.nrrd'},\"1000,1000,1000\"\n{folder / 'b.nrrd'},\"1,2\"\n")
    assert batch(manifest, "--out-dir", tmp_path / "o") == 1
    rows = table(tmp_path / "o")
    assert "outside" in rows["a"]["error"] and "X,Y,Z" in rows["b"]["error"]
    monkeypatch.chdir(tmp_path)  # a folder named relative to the working directory, as a user types it
    assert batch(Path("volumes"), "--out-dir", tmp_path / "f") == 0
    assert set(table(tmp_path / "f")) == {"a", "b"}


@pytest.mark.parametrize("text, message", [
    ("file,prompt\nx.nrrd,a\n", "has no 'path' column"),
    ("path,colour\nx.nrrd,red\n", "unknown column(s) colour"),
    ("path,case_id\nx.nrrd,a\ny.nrrd,a\n", "two cases share the id 'a'"),
    ("path,case_id\nx.nrrd,../up\n", "is not a safe folder name"),
])
def test_manifest_errors_refuse_the_batch(tmp_path, capsys, text, message):
    (tmp_path / "m.csv").write_text(text)
    assert main(["batch", str(tmp_path / "m.csv"), "--out-dir", str(tmp_path / "o"), "--model", "no/such"]) == 2
    error = capsys.readouterr().err
    assert message in error and error.startswith("zsdseg: error:") and error.count("\n") == 1


def test_a_row_gives_its_own_normal_prompt_and_a_bad_one_fails_only_that_case(tmp_path):
    from ZeroShotDiffusionSegLib.cli import build_parser
    from ZeroShotDiffusionSegLib.cohort.manifest import load_cases

    (tmp_path / "m.csv").write_text("path,prompt,normal_prompt\na.nrrd,liver tumor,fatty liver\n"
                                    "b.nrrd,liver tumor,\nc.nrrd,liver tumor,liver tumor\n")
    args = build_parser("batch").parse_args(["batch", str(tmp_path / "m.csv"), "--out-dir", str(tmp_path / "o")])
    a, b, c = load_cases(args)
    assert a.request.normal_prompt == "fatty liver" and b.request.normal_prompt is None and b.error is None
    assert c.request is None and "--normal-prompt is the prompt itself" in c.error


def test_ray_without_ray_says_how_to_install(cohort, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert batch(cohort / "cases.csv", "--out-dir", tmp_path / "o", "--ray", "local") == 2
    assert "pip install 'zeroshotdiffusionseg[ray]'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    path = os.pathsep.join([str(LIBRARY), str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}})
    yield ray
    ray.shutdown()


def test_ray_actors_give_the_embedded_outputs_and_skip_done_cases(local_ray, cohort, embedded, tmp_path):
    out, _ = embedded
    on_ray = tmp_path / "ray"
    assert batch(cohort / "cases.csv", "--out-dir", on_ray, "--ray", "auto", "--workers", "2") == 1
    rows = table(on_ray)
    assert list(rows) == CASES + ["broken"]  # manifest order, whatever order the actors finished in
    assert [rows[c]["status"] for c in CASES] == ["done"] * 5
    assert rows["broken"]["status"] == "failed" and "broken.nrrd is not a readable image" in rows["broken"]["error"]
    for case_id in CASES:
        for name in OUTPUTS:
            assert (on_ray / case_id / name).read_bytes() == (out / case_id / name).read_bytes(), (case_id, name)
        assert without_runtime(on_ray / case_id / "provenance.json") == without_runtime(out / case_id / "provenance.json")
    (on_ray / "case0" / "score.nrrd").unlink()  # a case interrupted before all its files landed
    assert batch(cohort / "cases.csv", "--out-dir", on_ray, "--ray", "auto") == 1
    rows = table(on_ray)
    assert rows["case0"]["status"] == "done" and [rows[c]["status"] for c in CASES[1:]] == ["skipped"] * 4
    assert local_ray.is_initialized()  # the batch leaves a cluster it did not start running
