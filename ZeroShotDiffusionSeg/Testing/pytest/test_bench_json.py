"""``zsdseg bench``: the JSON record's fields are present and consistent, with a stub engine whose
stage times are real (measured) but tiny, so the test runs in about a second."""

import argparse
import json
import time

import numpy as np
import pytest

from ZeroShotDiffusionSegLib.engine.types import ImageResult
from ZeroShotDiffusionSegLib.evaluation import bench


class TimedStubSegmenter:
    """Does a little numpy work per stage and reports the measured seconds, as the engine does."""

    model_id = "random:stub"
    device = "cpu"
    model_resolution = 64

    def __init__(self):
        self.last_timings = {}
        self.calls = 0

    def _stage(self, name, work):
        start = time.perf_counter()
        work()
        self.last_timings[name] = self.last_timings.get(name, 0.0) + time.perf_counter() - start

    def segment_batch(self, images, prompt=None, seeds=None, params=None):
        self.calls += 1
        self.last_timings = {}
        work = lambda: np.linalg.svd(np.random.default_rng(0).random((60, 60)))  # noqa: E731
        for stage in ("preprocess", "vae", "unet", "merging"):
            self._stage(stage, work)
        results = []
        for image in images:
            score = np.asarray(image, dtype=np.float32)
            self._stage("selection", lambda: None)
            results.append(ImageResult(labels=np.zeros(image.shape, np.int64), score_map=score, soft=score,
                                       mask=score > 0.5))
        for result in results:
            result.timings = dict(self.last_timings)
        return results

    def time_bare_passes(self, images, prompt=None, params=None):
        self.segment_batch(images, prompt)
        return {"vae": self.last_timings["vae"], "unet": self.last_timings["unet"]}

    def provenance(self):
        return {"model_id": self.model_id, "device": "cpu", "dtype": "float32"}


def test_record_fields_and_stage_times_within_total():
    segmenter = TimedStubSegmenter()
    record = bench.run_benchmark(segmenter, size=32, slices=5, batch_size=2, prompt="tumor", warmup=1)
    assert record["slices"] == 5 and record["slices_segmented"] == 5 and record["batch_size_final"] == 2
    expected_stages = {"io", "prepare", "text", "preprocess", "vae", "unet_capture", "merging", "selection", "consolidation", "other"}
    assert set(record["stages_s"]) == expected_stages
    assert all(seconds >= 0 for seconds in record["stages_s"].values())
    measured = sum(s for stage, s in record["stages_s"].items() if stage != "other")
    assert measured <= record["total_s"] + 1e-9
    assert sum(record["stages_s"].values()) == pytest.approx(record["total_s"])
    assert record["stages_s"]["unet_capture"] > 0 and record["stages_s"]["io"] > 0
    bare = record["bare_s"]
    assert bare["total"] == pytest.approx(bare["vae"] + bare["unet"]) and bare["total"] > 0
    assert record["ratio_pipeline_to_bare"] == pytest.approx(record["total_s"] / bare["total"])
    assert record["per_slice_s"] == pytest.approx(record["total_s"] / 5)
    assert record["peak_rss_mb"] > 10 and record["cuda_max_allocated_mb"] is None
    # 1 warm-up pass + 3 timed batches (2+2+1 slices) + 3 for the re-prompt (a stub has no states to
    # cache) + 1 warm-up bare pass + 3 bare batches
    assert segmenter.calls == 1 + 3 + 3 + 1 + 3
    assert record["reprompt"] == "lesion" and record["reprompt_query_cache"] == "off"
    assert record["ratio_reprompt_to_first_run"] == pytest.approx(record["reprompt_s"] / record["total_s"])
    json.dumps(record)  # plain JSON types only


def test_cli_writes_json_and_a_table(tmp_path, monkeypatch, capsys):
    import ZeroShotDiffusionSegLib.engine as engine

    monkeypatch.setattr(engine, "load_backbone", lambda model, device=None, dtype=None: model)
    monkeypatch.setattr(engine, "DiffusionSegmenter", lambda backbone: TimedStubSegmenter())
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "bench.json"
    args = parser.parse_args(["--model", "random:stub", "--size", "16", "--slices", "2", "--out", str(out)])
    assert bench.run(args) == 0
    record = json.loads(out.read_text())
    for field in ("command", "date", "machine", "model", "device", "dtype", "load_s", "total_s", "stages_s",
                  "bare_s", "ratio_pipeline_to_bare", "peak_rss_mb", "cuda_max_allocated_mb"):
        assert field in record, field
    assert record["random_weights"] is True and record["batch_size"] == 1
    assert "pipeline / bare" in capsys.readouterr().out


def test_synthetic_volume_is_deterministic_ct():
    volume = bench.synthetic_ct(24, 3)
    assert volume.shape == (3, 24, 24) and volume.dtype == np.int16
    assert volume.min() < -900 and volume.max() > 60  # noisy air and a denser blob inside the body
    assert np.array_equal(volume, bench.synthetic_ct(24, 3))

