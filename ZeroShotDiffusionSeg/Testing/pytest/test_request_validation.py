"""Every parameter's declared range, checked once when SegmentationParams / VolumeRequest is built,
and the same refusal from the command line, the worker's decoder and the server's decoder."""

import math

import pytest

from ZeroShotDiffusionSegLib.cli import main
from ZeroShotDiffusionSegLib.engine.types import SegmentationParams
from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.runners.protocol import request_from_dict
from ZeroShotDiffusionSegLib.server.protocol import request_from_json
from ZeroShotDiffusionSegLib.volume.request import VolumeRequest


@pytest.mark.parametrize("values, pattern", [
    ({"iterations": 100_000_000}, r"iterations \(--iterations\) must be in \[1, 20\], got 100000000"),
    ({"grid_points": 100_000}, r"grid points \(grid_points, --grid-points\) must be in \[1, 64\], got 100000"),
    ({"grid_points": 0}, r"grid_points.* must be in \[1, 64\], got 0"),
    ({"timestep": 1000}, r"timestep \(--timestep\) must be in \[0, 999\]"),
    ({"timestep": 3.5}, r"timestep .* must be a whole number"),
    ({"kl_threshold": 0.0}, r"KL threshold \(kl_threshold, --kl-threshold\) must be in \(0, 100\]"),
    ({"kl_threshold": math.nan}, r"must be a finite number"),
    ({"kl_threshold": math.inf}, r"must be a finite number"),
    ({"selection_threshold": -math.inf}, r"selection_threshold.* must be a finite number in \[0, 1\]"),
    ({"selection_threshold": "0.5"}, r"must be a number in \[0, 1\], got '0.5'"),
    ({"iterations": True}, r"iterations .* must be a number"),
    ({"refine": 1}, r"refine \(--refine\) must be true or false"),
    ({"noise_seed": -1}, r"noise_seed.* must be in \[0, 4294967295\]"),
])
def test_segmentation_params_refuse_out_of_range_values(values, pattern):
    with pytest.raises(UserError, match=pattern):
        SegmentationParams(**values)


def test_whole_floats_become_ints_and_defaults_pass():
    assert SegmentationParams(grid_points=8.0, timestep=10).grid_points == 8
    assert isinstance(SegmentationParams(grid_points=8.0).grid_points, int)
    assert isinstance(SegmentationParams(kl_threshold=1).kl_threshold, float)
    SegmentationParams(noise_seed=None)


@pytest.mark.parametrize("values, pattern", [
    ({"min_volume_mm3": math.nan}, r"minimum lesion volume \(min_volume_mm3, --min-volume\) must be a finite number >= 0 mm3, got nan"),
    ({"min_volume_mm3": -1}, r"min_volume_mm3.* must be >= 0 mm3, got -1"),
    ({"batch_size": 0}, r"batch size \(batch_size, --batch-size\) must be in \[1, 256\], got 0"),
    ({"batch_size": 10_000}, r"batch_size.* got 10000"),
    ({"mode": "guess"}, r"mode \(--mode\) must be one of auto, prompt, seed, unsupervised; got 'guess'"),
    ({"mode": 3}, r"mode \(--mode\) must be one of .*; got int"),
    ({"axis": "oblique"}, r"axis \(--axis\) must be one of"),
    ({"window": "wide"}, r"--window must be WIDTH/LEVEL"),
    ({"window": "nan/40"}, r"--window must be WIDTH/LEVEL"),
    ({"window": ["400/40"]}, r"window \(--window\) must be WIDTH/LEVEL"),
    ({"prompt": 5}, r"prompt \(--prompt\) must be text, got int"),
    ({"prompt": "x" * 1001}, r"prompt \(--prompt\) has 1001 characters; at most 1000"),
    ({"seeds": [(math.nan, 0, 0)]}, r"seed point .* must be a finite number"),
    ({"seeds": [(math.inf, 0, 0)]}, r"seed point .* must be a finite number"),
    ({"seeds": [(1, 2)]}, r"seed point .* must be 3 numbers X,Y,Z"),
    ({"seeds": "1,2,3"}, r"seeds must be a list of X,Y,Z points, got str"),
    ({"seeds": [(0, 0, 0)] * 65}, r"65 seed points given; at most 64"),
    ({"roi_voxels": ((0, 0, 0.5), (4, 4, 4))}, r"roi_voxels .* must be a whole number"),
    ({"roi_physical": ((0, 0, 0),)}, r"roi_physical \(--roi\) must be two corners"),
    ({"seeds": [(1e308, 0, 0)]}, r"seed point .* must be in \[-1000000, 1000000\] mm, got 1e\+308"),
    ({"roi_physical": ((0, 0, 0), (1e7, 0, 0))}, r"roi_physical \(--roi\) must be in \[-1000000, 1000000\] mm"),
    ({"roi_voxels": ((0, 0, 0), (10**23, 1, 1))}, r"roi_voxels .* must be in \[-1000000000, 1000000000\]"),
    ({"roi_physical": ((0, 0, 0), (1, 1, 1)), "roi_voxels": ((0, 0, 0), (1, 1, 1))}, r"either a voxel ROI or a physical ROI"),
    ({"coordinate_space": "XYZ"}, r"coordinate_space must be one of RAS, LPS"),
    ({"binary": "yes"}, r"binary \(--binary\) must be true or false"),
    ({"params": None}, r"params must be an object of segmentation parameters, got NoneType"),
])
def test_volume_request_refuses_malformed_fields(values, pattern):
    with pytest.raises(UserError, match=pattern):
        VolumeRequest(**values)


def test_volume_request_normalises_points_to_tuples_of_numbers():
    request = VolumeRequest(seeds=[[1, 2, 3]], roi_voxels=[[0, 0, 0.0], [4, 4, 4]], coordinate_space="lps")
    assert request.seeds == [(1.0, 2.0, 3.0)] and all(isinstance(v, float) for v in request.seeds[0])
    assert request.roi_voxels == ((0, 0, 0), (4, 4, 4)) and isinstance(request.roi_voxels[0][2], int)
    assert request.coordinate_space == "LPS"


@pytest.mark.parametrize("text, pattern", [
    ('{"params": {"iterations": 100000000}}', r"iterations \(--iterations\) must be in \[1, 20\]"),
    ('{"params": null}', r"params must be a JSON object"),
    ('{"params": {"speed": 3}}', r"params has unknown fields \['speed'\]"),
    ('{"seeds": 5}', r"seeds must be a list"),
    ('{"seeds": [["a", 1, 2]]}', r"seed point .* must be a number"),
    ('{"roi_voxels": [[0, 0], [1, 1, 1]]}', r"roi_voxels .* must be 3 numbers"),
    ('{"min_volume_mm3": "big"}', r"min_volume_mm3.* must be a number"),
    ('{"batch_size": 2.5}', r"batch_size.* must be a whole number"),
    ('{"roi_voxels": [[0, 0, 0], [100000000000000000000000, 1, 1]]}', r"roi_voxels .* must be in"),
    ('[1, 2]', r"the request must be a JSON object, got list"),
    ('[' * 100_000 + ']' * 100_000, r"longer than 100000 characters|nested too deeply"),
    ('[' * 20_000 + ']' * 20_000, r"nested too deeply"),
    ('{"prompt": "tumor", "speed": 1}', r"request has unknown fields \['speed'\]"),
])
def test_server_and_worker_decoders_refuse_with_one_line(text, pattern):
    with pytest.raises(UserError, match=pattern) as caught:
        request_from_json(text)
    assert "\n" not in str(caught.value)


def test_the_worker_decoder_is_the_same_check():
    with pytest.raises(UserError, match=r"grid_points.* must be in \[1, 64\]"):
        request_from_dict({"params": {"grid_points": 100_000}})


@pytest.mark.parametrize("options, pattern", [
    (["--grid-points", "100000"], r"grid points \(grid_points, --grid-points\) must be in \[1, 64\], got 100000"),
    (["--iterations", "0"], r"iterations \(--iterations\) must be in \[1, 20\]"),
    (["--min-volume", "nan"], r"minimum lesion volume \(min_volume_mm3, --min-volume\) must be a finite number"),
    (["--seed-ras=nan,0,0"], r"seed point .* must be a finite number"),
    (["--seed-ras=inf,0,0"], r"seed point .* must be a finite number"),
    (["--batch-size", "0"], r"batch size \(batch_size, --batch-size\) must be in \[1, 256\]"),
])
def test_the_command_line_refuses_before_reading_or_loading(options, pattern, tmp_path, capsys):
    """The input does not even exist: the ranges are checked before the volume is read or a model loads."""
    code = main(["segment", str(tmp_path / "missing.nrrd"), "--prompt", "tumor", "--out-dir", str(tmp_path / "out"),
                 "--model", "nobody/nothing", *options])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("zsdseg: error: ")
    import re
    assert re.search(pattern, err[0]), err[0]
    assert not (tmp_path / "out").exists()


def test_a_prompt_longer_than_the_text_encoder_reads_is_reported():
    from pathlib import Path

    from transformers import CLIPTokenizer

    import ZeroShotDiffusionSegLib.engine as engine
    from ZeroShotDiffusionSegLib.engine.prompt_length import prompt_cut_note

    tokenizer = CLIPTokenizer.from_pretrained(str(Path(engine.__file__).parent / "configs" / "tokenizer"))
    assert prompt_cut_note(tokenizer, "liver tumor") is None
    assert prompt_cut_note(tokenizer, " ".join(["big"] * 75)) is None  # exactly 75 content tokens: all read
    long_prompt = " ".join(["big"] * 70 + ["liver", "tumor", "in", "the", "right", "lobe", "near", "vessels"])
    assert prompt_cut_note(tokenizer, long_prompt) == (
        "the prompt has 78 tokens; the text encoder reads the first 75 (up to '...big big big big liver tumor in the right'), "
        "the rest is ignored")


def test_the_volume_run_says_when_the_prompt_is_cut(tiny_segmenter, tmp_path):
    from test_volume_fixtures import sphere_volume, write
    from ZeroShotDiffusionSegLib.volume.pipeline import run_volume

    image, _ = sphere_volume(centre_index=(16, 16, 1), size=(32, 32, 2), spacing=(1.0, 1.0, 3.0), radius_mm=6, noise_hu=10)
    path = write(image, tmp_path / "small.nrrd")
    result = run_volume(path, tmp_path / "out", tiny_segmenter,
                        VolumeRequest(prompt="tumor " * 80, batch_size=2, params=SegmentationParams(grid_points=4)))
    assert any(m.startswith("the prompt has 80 tokens; the text encoder reads the first 75") for m in result.messages)
