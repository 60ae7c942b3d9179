"""CT recognition, window presets chosen from the prompt, --window overrides, percentiles, body detection."""

import numpy as np
import pytest

from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.prompt_words import organ_table, window_preset_for, window_presets
from ZeroShotDiffusionSegLib.resources import resource_path, resources_dir
from ZeroShotDiffusionSegLib.volume import intensity


def ct_like(seed=0):
    rng = np.random.default_rng(seed)
    volume = np.full((6, 32, 32), -1000.0, dtype=np.float32)  # air around the body
    volume[:, 8:24, 8:24] = rng.normal(40, 20, size=(6, 16, 16))
    volume[:, 14:18, 14:18] = 700  # bone
    return volume


def mr_like(seed=0):
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 150.0, size=(6, 32, 32)).astype(np.float32)


def test_resources_live_next_to_the_package_and_presets_are_documented():
    assert resources_dir().name == "Resources" and resources_dir().parent.name == "ZeroShotDiffusionSeg"
    assert resource_path("Presets", "organs.json").is_file()
    table, windows = organ_table(), window_presets()
    assert table["default"] in windows
    assert sorted(windows) == ["bone", "brain", "colon", "kidney", "liver", "lung", "pancreas", "soft_tissue"]
    for name, preset in windows.items():
        assert preset["width"] > 0 and preset["source"] and preset["reason"], name
    for name in ("breast", "skin", "prostate"):  # organs without a standard CT window say why
        assert "width" not in table["organs"][name] and table["organs"][name]["reason"], name
    with pytest.raises(UserError, match="missing resource file"):
        resource_path("Presets", "no_such_file.json")


def test_ct_is_recognised_and_mr_is_not():
    assert intensity.looks_like_ct(ct_like())
    assert not intensity.looks_like_ct(mr_like())
    assert not intensity.looks_like_ct(ct_like() + 1024)  # CT stored without its rescale offset: not HU


@pytest.mark.parametrize("prompt, preset, width, level", [
    ("lung tumor", "lung", 1500, -600),
    ("a hepatic metastasis", "liver", 150, 30),
    ("Renal cell carcinoma", "kidney", 400, 40),
    ("pancreatic mass", "pancreas", 400, 40),
    ("colorectal cancer", "colon", 400, 40),
    ("glioblastoma in the brain", "brain", 80, 40),
    ("lytic bone lesion", "bone", 1800, 400),
    ("tumor", "soft_tissue", 400, 40),
    ("liver lesion near the lung base", "liver", 150, 30),  # the earliest organ word wins
])
def test_ct_window_is_chosen_from_the_prompt_words(prompt, preset, width, level):
    choice = intensity.choose_intensity(ct_like(), prompt)
    assert choice.is_ct and choice.name == preset
    assert (choice.lower, choice.upper) == (level - width / 2, level + width / 2)
    assert f"W{width}/L{level}" in choice.describe()


def test_words_are_matched_whole_not_inside_other_words():
    assert window_preset_for("bronchiolung")[0] == "soft_tissue"
    assert window_preset_for(None) == ("soft_tissue", "no prompt")


def test_an_organ_without_a_ct_window_takes_the_default_and_says_so():
    assert window_preset_for("breast mass") == ("soft_tissue", "prompt word 'breast' names the breast, which has no "
                                                               "standard CT window")
    choice = intensity.choose_intensity(ct_like(), "breast mass")
    assert choice.name == "soft_tissue" and (choice.lower, choice.upper) == (-160.0, 240.0)
    with pytest.raises(UserError, match="one of lung, liver, kidney, pancreas, colon, brain, bone, soft_tissue;"):
        intensity.parse_window("breast")


def test_window_override_as_width_level_or_preset_name():
    choice = intensity.choose_intensity(ct_like(), "lung tumor", window="350/50")
    assert (choice.name, choice.lower, choice.upper) == ("override", -125.0, 225.0)
    assert intensity.parse_window("1500/-600") == ("override", -1350.0, 150.0)
    assert intensity.parse_window("Brain") == ("brain", 0.0, 80.0)
    # An override applies to MR too (then in the MR's own units).
    assert intensity.choose_intensity(mr_like(), None, window="200/100").lower == 0.0
    for bad in ("wide", "400", "0/40", "-10/40", "400/40/2"):
        with pytest.raises(UserError, match="--window"):
            intensity.parse_window(bad)


def test_windowing_maps_the_window_onto_zero_to_one_and_clips():
    choice = intensity.choose_intensity(ct_like(), "liver")  # W150/L30: -45..105
    values = np.array([-1000, -45, 30, 105, 3000], dtype=np.float32)
    np.testing.assert_allclose(intensity.to_unit_range(values, choice), [0, 0, 0.5, 1, 1], atol=1e-6)
    assert intensity.to_unit_range(values, choice).dtype == np.float32


def test_mr_uses_the_1st_to_99th_percentile():
    volume = mr_like()
    choice = intensity.choose_intensity(volume, "brain tumor")
    assert not choice.is_ct and choice.name == "percentile"
    np.testing.assert_allclose((choice.lower, choice.upper), np.percentile(volume, [1, 99]), rtol=1e-6)
    unit = intensity.to_unit_range(volume, choice)
    assert 0.005 < (unit == 0).mean() < 0.02 and 0.005 < (unit == 1).mean() < 0.02
    assert "percentile" in choice.describe()


def test_slices_of_air_or_a_constant_value_have_no_body():
    ct_choice = intensity.choose_intensity(ct_like(), "lung")
    assert intensity.has_body(ct_like()[0], ct_choice)
    assert not intensity.has_body(np.full((8, 8), -1000.0), ct_choice)
    assert not intensity.has_body(np.linspace(-1024, -900, 64).reshape(8, 8), ct_choice)  # air with noise
    mr_choice = intensity.choose_intensity(mr_like(), None)
    assert intensity.has_body(mr_like()[0], mr_choice)
    assert not intensity.has_body(np.full((8, 8), 500.0), mr_choice)
    assert not intensity.has_body(np.zeros((8, 8)) + np.eye(8) * 0.001, mr_choice)  # only background noise
