"""Normal prompts, and re-prompting a volume from its cached unconditional pass."""

import argparse
import json

import pytest
import torch

from test_volume_fixtures import sphere_volume, write
from ZeroShotDiffusionSegLib import segment_command
from ZeroShotDiffusionSegLib.engine.prompt_maps import SliceState
from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.prompt_words import normal_prompt_for
from ZeroShotDiffusionSegLib.volume import VolumeRequest, run_volume
from ZeroShotDiffusionSegLib.volume.cli import query_cache_from_args
from ZeroShotDiffusionSegLib.volume.query_cache import QueryCache, cache_key

COMPARED = ("labels.nrrd", "score.nrrd", "lesions.csv")


def test_normal_prompt_from_preset_organ_word_override_or_off():
    assert normal_prompt_for("liver tumor") == "healthy liver"
    assert normal_prompt_for("skin lesion") == "healthy skin"  # an organ without a CT window
    assert normal_prompt_for("breast mass") == "healthy breast"
    assert normal_prompt_for("hypodense hepatic lesion") == "healthy liver"  # organ words, as for the CT window
    assert normal_prompt_for("renal mass") == "healthy kidney"
    assert normal_prompt_for("metastasis") == "healthy tissue"
    assert normal_prompt_for("liver tumor", "  normal   liver parenchyma ") == "normal liver parenchyma"
    assert normal_prompt_for("liver tumor", "None") is None
    with pytest.raises(UserError, match="is the prompt itself"):
        normal_prompt_for("liver tumor", "Liver  tumor")
    with pytest.raises(UserError, match="--normal-prompt is empty"):
        VolumeRequest(prompt="liver tumor", normal_prompt="  ")


def small_volume(tmp_path):
    image, _ = sphere_volume(centre_index=(32, 32, 1), size=(64, 64, 3), spacing=(0.7, 0.8, 3.0), radius_mm=8, noise_hu=10)
    return write(image, tmp_path / "small.nrrd")


def provenance(folder):
    return json.loads((folder / "provenance.json").read_text())


def test_reprompt_from_the_disk_cache_equals_a_fresh_run_byte_for_byte(tiny_segmenter, tmp_path):
    path = small_volume(tmp_path)
    second = VolumeRequest(prompt="liver lesion", batch_size=2)
    run_volume(path, tmp_path / "fresh", tiny_segmenter, second)
    run_volume(path, tmp_path / "first", tiny_segmenter, VolumeRequest(prompt="liver tumor", batch_size=2),
               cache=QueryCache(64, tmp_path / "cache"))
    assert provenance(tmp_path / "first")["runtime"]["query_cache"] == "stored"
    assert len(list((tmp_path / "cache").glob("*.zsdq"))) == 1 and not list((tmp_path / "cache").glob(".*"))

    cache = QueryCache(64, tmp_path / "cache")  # a new process: only the disk holds the entry
    run_volume(path, tmp_path / "again", tiny_segmenter, second, cache=cache)
    runtime = provenance(tmp_path / "again")["runtime"]
    assert runtime["query_cache"] == "disk hit" and runtime["engine_passes"] == 0
    segmented = provenance(tmp_path / "again")["slicing"]["slices_segmented"]
    assert segmented > 1 and runtime["timings_s"]["segment_per_slice"] == pytest.approx(runtime["timings_s"]["segment"] / segmented)
    for name in COMPARED:
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name
    assert provenance(tmp_path / "again")["consolidation"]["normal_prompt"] == "healthy liver"
    assert "unconditional" in provenance(tmp_path / "again")["segmenter"]["prompt_maps"]

    run_volume(path, tmp_path / "memory", tiny_segmenter, VolumeRequest(prompt="liver tumor", batch_size=2), cache=cache)
    assert provenance(tmp_path / "memory")["runtime"]["query_cache"] == "memory hit"
    # A parameter of the pass is part of the key: another merging threshold runs the model again.
    run_volume(path, tmp_path / "other", tiny_segmenter, VolumeRequest(prompt="liver tumor", batch_size=2,
               params=second.params.__class__(kl_threshold=0.9)), cache=cache)
    assert provenance(tmp_path / "other")["runtime"]["query_cache"] == "stored"


def state(megabytes=1.0):
    values = int(megabytes * 2**20 / 2)
    return SliceState(torch.zeros(4, 4, dtype=torch.int16), (4, 4), {"layer": torch.zeros(1, values, 1, dtype=torch.float16)})


def fields(name):
    return {"format": 1, "input_sha256": name, "slices": [0]}


def test_damaged_or_mismatching_disk_entries_are_ignored(tmp_path):
    QueryCache(10, tmp_path).put(fields("a"), {0: state(0.1)})
    entry = tmp_path / f"{cache_key(fields('a'))}.zsdq"
    assert QueryCache(10, tmp_path).get(fields("a"))[0].queries["layer"].dtype == torch.float16
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # truncated
    cache = QueryCache(10, tmp_path)
    assert cache.get(fields("a")) is None and cache.last_event == "miss"
    # An entry under the right name recording other fields (an edited or colliding file) is not trusted.
    QueryCache(10, tmp_path).put(fields("b"), {0: state(0.1)})
    (tmp_path / f"{cache_key(fields('b'))}.zsdq").replace(entry)
    assert QueryCache(10, tmp_path).get(fields("a")) is None


def test_memory_and_disk_are_bounded_least_recently_used_first(tmp_path):
    cache = QueryCache(2.5, tmp_path)
    cache.put(fields("a"), {0: state()})
    cache.put(fields("b"), {0: state()})
    assert cache.get(fields("a")) is not None  # a is now the most recently used
    cache.put(fields("c"), {0: state()})
    assert cache_key(fields("b")) not in cache._memory and cache_key(fields("a")) in cache._memory
    assert len(list(tmp_path.glob("*.zsdq"))) == 2
    cache.put(fields("huge"), {0: state(3)})
    assert cache.last_event == "too big to keep" and cache.get(fields("huge")) is None


def test_cache_options_are_checked_before_the_model_loads(tmp_path):
    parser = argparse.ArgumentParser()
    segment_command.add_arguments(parser)
    with pytest.raises(UserError, match="--cache-mb bounds --cache-dir"):
        query_cache_from_args(parser.parse_args(["v.nrrd", "--cache-mb", "10"]))
    with pytest.raises(UserError, match="--cache-mb must be positive"):
        query_cache_from_args(parser.parse_args(["v.nrrd", "--cache-dir", str(tmp_path), "--cache-mb", "0"]))
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot create the cache folder"):
        query_cache_from_args(parser.parse_args(["v.nrrd", "--cache-dir", str(tmp_path / "file" / "sub")]))


def test_query_shapes_are_the_ones_a_pass_keeps(tiny_segmenter):
    from ZeroShotDiffusionSegLib.volume.query_cache import query_shapes

    [captured] = tiny_segmenter.capture_states([torch.rand(40, 50).numpy()])
    expected = query_shapes(tiny_segmenter.backbone.unet)
    assert expected and {name: tuple(query.shape) for name, query in captured.queries.items()} == expected


KEY = {"format": 2, "input_sha256": "x", "resolution": 8, "axis": 2, "roi": [[0, 0, 0], [5, 3, 1]], "slices": [0, 1],
       "queries": {"layer": [2, 4, 3]}}


def good_state():
    return SliceState(torch.zeros(8, 8, dtype=torch.int16), (4, 6), {"layer": torch.ones(2, 4, 3, dtype=torch.float16)})


def tamper(path, change):
    data = torch.load(path, weights_only=True)
    change(data)
    torch.save(data, path)


def set_labels(data):
    data["slices"][1]["labels"] = data["slices"][1]["labels"][:, :-1].clone()  # one column short


def set_queries(data):
    data["slices"][0]["queries"]["layer"] = torch.ones(2, 4, 5, dtype=torch.float16)


def set_nan(data):
    queries = data["slices"][1]["queries"]
    queries[sorted(queries)[0]][0, 0, 0] = float("nan")


def set_shape(data):
    data["slices"][0]["shape"] = [6, 4]


def set_negative(data):
    data["slices"][0]["labels"][0, 0] = -3


def set_layers(data):
    data["slices"][0]["queries"] = {"other": torch.ones(2, 4, 3, dtype=torch.float16)}


def set_dtype(data):
    data["slices"][0]["queries"]["layer"] = torch.ones(2, 4, 3, dtype=torch.float32)


@pytest.mark.parametrize("change, reason", [
    (set_labels, "slice 1: partition shape (8, 7), the model's is (8, 8)"),
    (set_queries, "slice 0: queries of layer have shape (2, 4, 5), the model's (2, 4, 3)"),
    (set_nan, "slice 1: queries of layer hold NaN or infinite values"),
    (set_shape, "slice 0: image shape (6, 4), the slicing gives (4, 6)"),
    (set_negative, "slice 0: negative region ids"),
    (set_layers, "slice 0: other attention layers than the model's"),
    (set_dtype, "slice 0: queries of layer are not fp16"),
])
def test_a_well_formed_but_wrong_entry_is_logged_and_rebuilt(tmp_path, caplog, change, reason):
    QueryCache(10, tmp_path).put(KEY, {0: good_state(), 1: good_state()})
    entry = tmp_path / f"{cache_key(KEY)}.zsdq"
    assert QueryCache(10, tmp_path).get(KEY) is not None  # valid as written
    tamper(entry, change)
    cache = QueryCache(10, tmp_path)
    with caplog.at_level("WARNING", logger="zsdseg.cache"):
        assert cache.get(KEY) is None and cache.last_event == "miss"
    assert reason in caplog.text and "the pass runs again and replaces it" in caplog.text
    cache.put(KEY, {0: good_state(), 1: good_state()})  # what the pipeline does after a miss
    assert QueryCache(10, tmp_path).get(KEY) is not None


def test_an_entry_stored_under_another_key_is_refused_with_a_log_line(tmp_path, caplog):
    other = {**KEY, "input_sha256": "y"}
    QueryCache(10, tmp_path).put(other, {0: good_state(), 1: good_state()})
    (tmp_path / f"{cache_key(other)}.zsdq").replace(tmp_path / f"{cache_key(KEY)}.zsdq")  # renamed to the asked key
    with caplog.at_level("WARNING", logger="zsdseg.cache"):
        assert QueryCache(10, tmp_path).get(KEY) is None
    assert "stored under another key" in caplog.text


@pytest.mark.parametrize("change", [set_labels, set_nan], ids=["wrong-shape-labels", "nan-queries"])
def test_a_run_on_a_poisoned_entry_rebuilds_it_and_writes_the_fresh_outputs(tiny_segmenter, tmp_path, change):
    path = small_volume(tmp_path)
    request = VolumeRequest(prompt="liver tumor", batch_size=3)
    run_volume(path, tmp_path / "first", tiny_segmenter, request, cache=QueryCache(64, tmp_path / "cache"))
    [entry] = (tmp_path / "cache").glob("*.zsdq")
    tamper(entry, change)
    run_volume(path, tmp_path / "again", tiny_segmenter, request, cache=QueryCache(64, tmp_path / "cache"))
    assert provenance(tmp_path / "again")["runtime"]["query_cache"] == "stored"  # rebuilt, not trusted
    for name in COMPARED:
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "first" / name).read_bytes(), name
    assert QueryCache(64, tmp_path / "cache").get(json.loads(torch.load(entry, weights_only=True)["fields"])) is not None
