"""Terminology strings, prompt presets and segment naming."""

from pathlib import Path

from ZeroShotDiffusionSegLib.prompt_words import anatomic_region
from ZeroShotDiffusionSegLib.slicer.terminology import (
    base_segment_name, load_presets, segment_color, segment_names, terminology_entry,
    terminology_for)

PRESETS_FILE = Path(__file__).resolve().parents[2] / "Resources" / "Presets" / "prompts.json"

NEOPLASM_ENTRY = ("Segmentation category and type - DICOM master list"
                  "~SCT^49755003^Morphologically Altered Structure~SCT^108369006^Neoplasm~^^"
                  "~Anatomic codes - DICOM master list~^^~^^")


def test_default_entry_is_neoplasm_in_morphologically_altered_structure():
    assert terminology_entry() == NEOPLASM_ENTRY
    assert len(terminology_entry().split("~")) == 7


def test_presets_cover_the_issue_list_and_each_names_an_organ_with_a_region():
    presets = load_presets(PRESETS_FILE)
    prompts = [p.prompt for p in presets]
    for required in ["liver tumor", "kidney tumor", "lung nodule", "pancreatic tumor", "brain tumor", "skin lesion"]:
        assert required in prompts
    assert presets[prompts.index("liver tumor")].label == "Liver tumor"
    assert all(anatomic_region(prompt) is not None for prompt in prompts), prompts


def test_prompt_with_an_organ_gets_its_anatomic_region():
    assert anatomic_region("  hypodense   LIVER lesion ") == ("SCT", "10200004", "Liver")
    assert anatomic_region("renal mass") == ("SCT", "64033007", "Kidney")
    assert anatomic_region("pancreatic tumor") == ("SCT", "15776009", "Pancreas")
    assert anatomic_region("prostate lesion") == ("SCT", "41216001", "Prostate")
    assert anatomic_region("tumor") is None and anatomic_region(None) is None
    assert anatomic_region("lytic bone lesion") is None  # the anatomic list codes named bones only
    assert anatomic_region("liverish mass") is None  # whole words only
    entry = terminology_for("prompt", "lung nodule")
    assert entry.split("~")[2] == "SCT^108369006^Neoplasm"
    assert entry.split("~")[5] == "SCT^39607008^Lung"
    assert terminology_for("seed", None) == NEOPLASM_ENTRY


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
