"""Terminology strings, prompt presets and segment naming."""

from pathlib import Path

from ZeroShotDiffusionSegLib.slicer.terminology import (
    base_segment_name, load_presets, region_for_prompt, segment_color, segment_names, terminology_entry,
    terminology_for)

PRESETS_FILE = Path(__file__).resolve().parents[2] / "Resources" / "Presets" / "prompts.json"

NEOPLASM_ENTRY = ("Segmentation category and type - DICOM master list"
                  "~SCT^49755003^Morphologically Altered Structure~SCT^108369006^Neoplasm~^^"
                  "~Anatomic codes - DICOM master list~^^~^^")


def test_default_entry_is_neoplasm_in_morphologically_altered_structure():
    assert terminology_entry() == NEOPLASM_ENTRY
    assert len(terminology_entry().split("~")) == 7


def test_presets_cover_the_issue_list_and_carry_regions():
    presets = load_presets(PRESETS_FILE)
    prompts = [p.prompt for p in presets]
    for required in ["liver tumor", "kidney tumor", "lung nodule", "pancreatic tumor", "brain tumor", "skin lesion"]:
        assert required in prompts
    liver = presets[prompts.index("liver tumor")]
    assert liver.region == ("SCT", "10200004", "Liver") and liver.label == "Liver tumor"


def test_prompt_with_an_organ_gets_its_anatomic_region():
    presets = load_presets(PRESETS_FILE)
    assert region_for_prompt("  hypodense   LIVER lesion ", presets) == ("SCT", "10200004", "Liver")
    assert region_for_prompt("renal mass", presets) == ("SCT", "64033007", "Kidney")
    assert region_for_prompt("tumor", presets) is None
    entry = terminology_for("prompt", "lung nodule", presets)
    assert entry.split("~")[2] == "SCT^108369006^Neoplasm"
    assert entry.split("~")[5] == "SCT^39607008^Lung"
    assert terminology_for("seed", None, presets) == NEOPLASM_ENTRY


def test_unsupervised_regions_are_not_called_neoplasm():
    entry = terminology_for("unsupervised", "liver tumor")
    assert "108369006" not in entry and "SCT^85756007^Tissue" in entry


def test_segment_names_follow_the_prompt_and_never_collide():
    assert base_segment_name("prompt", "  liver   tumor ") == "liver tumor"
    assert base_segment_name("seed", "") == "Seeded lesion"
    assert base_segment_name("unsupervised", "liver tumor") == "Region"
    assert segment_names("liver tumor", 1) == ["liver tumor"]
    assert segment_names("liver tumor", 3) == ["liver tumor 1", "liver tumor 2", "liver tumor 3"]
    assert segment_names("liver tumor", 1, existing=["liver tumor"]) == ["liver tumor 1"]
    assert segment_names("liver tumor", 2, existing=["liver tumor 1"]) == ["liver tumor 2", "liver tumor 3"]


def test_colors_are_distinct_for_neighbouring_lesions():
    assert segment_color(0) != segment_color(1)
    assert all(0 <= channel <= 1 for channel in segment_color(5))
