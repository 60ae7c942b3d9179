"""``zsdseg eval`` end to end on a synthetic pairs folder with a stub engine: deployed vs oracle
numbers, baselines, the meaningless stamp, overlays, and a broken case that does not stop the run."""

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from ZeroShotDiffusionSegLib.engine.types import ImageResult
from ZeroShotDiffusionSegLib.evaluation import cli

SIZE = 16


class QuadrantSegmenter:
    """Partition = the four quadrants; seed mode selects the seed's quadrant, prompt mode the top-left one."""

    model_id = "random:stub"
    device = "cpu"

    def segment_batch(self, images, prompt=None, seeds=None, params=None):
        results = []
        for index, image in enumerate(images):
            rows, cols = image.shape[:2]
            labels = (np.arange(rows)[:, None] >= rows // 2) * 2 + (np.arange(cols)[None, :] >= cols // 2)
            mask = score = None
            if prompt:
                mask = labels == 0
                score = mask.astype(np.float32)
            if seeds is not None and seeds[index]:
                x, y = seeds[index][0]
                mask = labels == labels[y, x]
            results.append(ImageResult(labels=labels.astype(np.int64), score_map=score, soft=score, mask=mask,
                                       timings={"unet": 0.0}))
        return results

    def provenance(self):
        return {"model_id": self.model_id}


def _parse(*argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def pairs_folder(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    image = np.full((SIZE, SIZE), 30, np.uint8)
    image[8:16, 8:16] = 220  # the bright bottom-right quadrant is the lesion
    truth = np.zeros((SIZE, SIZE), np.uint8)
    truth[8:16, 8:16] = 255
    for name in ("case1", "case2"):
        Image.fromarray(image).save(root / f"{name}.png")
        Image.fromarray(truth).save(root / f"{name}_mask.png")
    (root / "broken.png").write_bytes(b"not a png")
    Image.fromarray(truth).save(root / "broken_mask.png")
    return root


def test_seed_mode_oracle_baselines_and_a_failed_case(pairs_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_load_segmenter", lambda args: QuadrantSegmenter())
    out = tmp_path / "out"
    assert cli.run(_parse(str(pairs_folder), "--model", "random:stub", "--out", str(out))) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["meaningless"] is True
    assert results["meta"]["modes"] == ["deployed", "oracle_single", "oracle_union", "otsu", "kmeans", "whole_image"]
    statuses = {case["name"]: case["status"] for case in results["cases"]}
    assert statuses == {"broken": "failed", "case1": "ok", "case2": "ok"}
    summary = results["summary"]
    # The seed at the lesion's centroid falls in the lesion's quadrant: every selection is exact.
    for mode in ("deployed", "oracle_single", "oracle_union", "otsu", "kmeans"):
        assert summary[mode]["dice"]["n"] == 2
        assert summary[mode]["dice"]["mean"] == pytest.approx(1.0), mode
        assert summary[mode]["hd95"]["median"] == pytest.approx(0.0), mode
    assert summary["whole_image"]["dice"]["mean"] == pytest.approx(2 * 64 / (64 + 256))
    case = next(c for c in results["cases"] if c["name"] == "case1")
    assert case["seed_index"] == [12, 12] and case["model"]["segments"] == 4
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "meaningless: random weights" in report and "broken" in report
    assert "| case1 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 0.400 |" in report  # Dice per case, modes in order
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["case1.png", "case2.png"]


def test_prompt_mode_shows_the_gap_between_deployed_and_oracle(pairs_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_load_segmenter", lambda args: QuadrantSegmenter())
    out = tmp_path / "out"
    cli.run(_parse(str(pairs_folder), "--model", "random:stub", "--prompt", "lesion", "--no-baselines", "--no-overlays", "--out", str(out)))
    summary = json.loads((out / "results.json").read_text())["summary"]
    # The plain prompt rule is a column beside the anomaly-aware one (a stand-in engine knows one rule: equal).
    assert set(summary) == {"deployed", "oracle_single", "oracle_union", "deployed_plain"}
    assert summary["deployed_plain"] == summary["deployed"]
    assert summary["deployed"]["dice"]["mean"] == pytest.approx(0.0)  # the stub's prompt picks the wrong quadrant
    assert summary["deployed"]["hd95"]["n"] == 2 and summary["deployed"]["hd95"]["median"] > 0
    assert summary["oracle_single"]["dice"]["mean"] == pytest.approx(1.0)
    assert not (out / "overlays").exists()


def test_baselines_only_without_a_model(pairs_folder, tmp_path):
    out = tmp_path / "out"
    assert cli.run(_parse(str(pairs_folder), "--out", str(out), "--limit", "2")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["meaningless"] is False and results["meta"]["model"] is None
    assert set(results["summary"]) == {"otsu", "kmeans", "whole_image"}
    assert [c["name"] for c in results["cases"]] == ["broken", "case1"]  # natural order, then the limit


def _volume_folder(tmp_path):
    import SimpleITK as sitk

    root = tmp_path / "volumes"
    root.mkdir()
    rng = np.random.default_rng(0)
    volume = (100 + rng.integers(0, 50, (4, SIZE, SIZE))).astype(np.int16)  # texture: every slice has body
    label = np.zeros((4, SIZE, SIZE), np.uint8)
    label[1:3, 8:16, 8:16] = 1
    volume[label == 1] += 800
    for name, array in (("case_image.nrrd", volume), ("case_label.nrrd", label)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.0, 1.0, 3.0))
        sitk.WriteImage(image, str(root / name))
    return root


def test_volume_case_through_the_volume_pipeline(tmp_path, monkeypatch):
    """nrrd-pairs with the real run_volume: the seed's quadrant propagates through all four slices
    (deployed), while the per-slice oracle union recovers the lesion's two slices exactly."""
    root = _volume_folder(tmp_path)
    monkeypatch.setattr(cli, "_load_segmenter", lambda args: QuadrantSegmenter())
    out = tmp_path / "out"
    assert cli.run(_parse(str(root), "--layout", "nrrd-pairs", "--model", "random:stub", "--out", str(out))) == 0
    results = json.loads((out / "results.json").read_text())
    case = results["cases"][0]
    assert case["status"] == "ok", case.get("error")
    assert case["spacing"] == [3.0, 1.0, 1.0] and case["seed_index"] == [2, 12, 12]
    metrics = case["metrics"]
    assert metrics["deployed"]["dice"] == pytest.approx(2 * 128 / (256 + 128))
    assert metrics["oracle_union"]["dice"] == pytest.approx(1.0)
    assert metrics["oracle_single"]["dice"] == pytest.approx(2 * 64 / (64 + 128))
    assert metrics["deployed"]["hd95"] == pytest.approx(3.0)  # one slice (3 mm) beyond the lesion on each side
    assert (out / "overlays" / "case.png").is_file()


def test_volume_prompt_mode(tmp_path, monkeypatch):
    """Prompt mode on a volume: the stub's prompt picks the wrong quadrant in every slice (Dice 0),
    the oracle still finds the lesion."""
    root = _volume_folder(tmp_path)
    monkeypatch.setattr(cli, "_load_segmenter", lambda args: QuadrantSegmenter())
    out = tmp_path / "out"
    cli.run(_parse(str(root), "--layout", "nrrd-pairs", "--model", "random:stub", "--prompt", "tumor",
                   "--no-baselines", "--no-overlays", "--out", str(out)))
    case = json.loads((out / "results.json").read_text())["cases"][0]
    assert case["status"] == "ok", case.get("error")
    assert case["metrics"]["deployed"]["dice"] == 0.0
    assert case["metrics"]["oracle_union"]["dice"] == pytest.approx(1.0)


def test_empty_truth_case_follows_the_conventions(tmp_path, monkeypatch):
    """No lesion: no seed to give, so seed-mode selections are empty (Dice 1, HD95 0), while the
    whole-image floor predicts something (Dice 0, HD95 undefined and counted as such)."""
    root = tmp_path / "data"
    root.mkdir()
    Image.fromarray(np.full((SIZE, SIZE), 80, np.uint8)).save(root / "clear.png")
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(root / "clear_mask.png")
    monkeypatch.setattr(cli, "_load_segmenter", lambda args: QuadrantSegmenter())
    out = tmp_path / "out"
    cli.run(_parse(str(root), "--model", "random:stub", "--no-overlays", "--out", str(out)))
    results = json.loads((out / "results.json").read_text())
    case = results["cases"][0]
    assert case["seed_index"] is None
    for mode in ("deployed", "oracle_single", "oracle_union", "otsu", "kmeans"):
        assert (case["metrics"][mode]["dice"], case["metrics"][mode]["hd95"]) == (1.0, 0.0)
    assert case["metrics"]["whole_image"]["dice"] == 0.0 and case["metrics"]["whole_image"]["hd95"] is None
    assert results["summary"]["whole_image"]["hd95"]["n_undefined"] == 1


def test_only_selects_cases_by_name_and_rejects_unknown_names(pairs_folder, tmp_path):
    from ZeroShotDiffusionSegLib.errors import UserError

    out = tmp_path / "out"
    cli.run(_parse(str(pairs_folder), "--only", "case2", "--no-overlays", "--out", str(out)))
    assert [c["name"] for c in json.loads((out / "results.json").read_text())["cases"]] == ["case2"]
    with pytest.raises(UserError, match="nope"):
        cli.run(_parse(str(pairs_folder), "--only", "case1,nope", "--out", str(out)))


def test_both_prompt_rules_come_from_one_pass_of_the_engine(tiny_segmenter):
    image = np.random.default_rng(3).random((40, 40)).astype(np.float32)
    aware, plain = cli._prompt_results_2d(tiny_segmenter, image, "liver tumor", cli.SegmentationParams())
    assert set(aware.timings) >= {"unet", "merging"}
    assert np.array_equal(aware.soft, tiny_segmenter.segment_batch([image], prompt="liver tumor", normal_prompt="healthy liver")[0].soft)
    assert np.array_equal(plain.soft, tiny_segmenter.segment_batch([image], prompt="liver tumor")[0].soft)
    assert plain.anomaly_map is None and aware.anomaly_map is not None


def test_a_log_gets_one_line_per_case_and_no_carriage_returns(pairs_folder, tmp_path, capsys):
    """stderr is not a terminal here (captured): no progress bar redrawing itself, a plain line per case."""
    assert cli.run(_parse(str(pairs_folder), "--no-overlays", "--out", str(tmp_path / "out"))) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("zsdseg eval: 1/3 broken failed:")
    assert [line.split(":")[1].strip() for line in lines[1:]] == ["2/3 case1", "3/3 case2"]
