"""The organ a prompt is about (Resources/Presets/organs.json) and what follows from it: the CT window, the
normal prompt and the DICOM anatomic region, for the panel's presets and for prompts that name two organs
or only suggest one."""

import pytest

from ZeroShotDiffusionSegLib.prompt_words import anatomic_region, normal_prompt_for, prompt_organ, window_preset_for
from ZeroShotDiffusionSegLib.resources import resource_path
from ZeroShotDiffusionSegLib.slicer.terminology import load_presets

LIVER, KIDNEY, LUNG = ("SCT", "10200004", "Liver"), ("SCT", "64033007", "Kidney"), ("SCT", "39607008", "Lung")
PANCREAS, BRAIN, COLON = ("SCT", "15776009", "Pancreas"), ("SCT", "12738006", "Brain"), ("SCT", "71854001", "Colon")
SKIN, BREAST, PROSTATE = ("SCT", "39937001", "Skin structure"), ("SCT", "76752008", "Breast"), ("SCT", "41216001", "Prostate")

# The panel's presets: the same window, normal prompt and region as when each preset carried its own.
PRESETS = {
    "liver tumor": ("liver", "healthy liver", LIVER),
    "kidney tumor": ("kidney", "healthy kidney", KIDNEY),
    "lung nodule": ("lung", "healthy lung", LUNG),
    "pancreatic tumor": ("pancreas", "healthy pancreas", PANCREAS),
    "brain tumor": ("brain", "healthy brain", BRAIN),
    "skin lesion": ("soft_tissue", "healthy skin", SKIN),
    "breast tumor": ("soft_tissue", "healthy breast", BREAST),
    "prostate lesion": ("soft_tissue", "healthy prostate", PROSTATE),
    "colon tumor": ("colon", "healthy colon", COLON),
}


def implied(prompt):
    return window_preset_for(prompt)[0], normal_prompt_for(prompt), anatomic_region(prompt)


def test_every_preset_is_covered_and_implies_what_it_did():
    presets = [preset.prompt for preset in load_presets(resource_path("Presets", "prompts.json"))]
    assert sorted(presets) == sorted(PRESETS)
    assert {prompt: implied(prompt) for prompt in presets} == {prompt: PRESETS[prompt] for prompt in presets}


@pytest.mark.parametrize("prompt, expected", [
    # the site of a metastasis wins over the primary, wherever each stands
    ("breast cancer liver metastasis", ("liver", "healthy liver", LIVER)),
    ("lung cancer brain metastasis", ("brain", "healthy brain", BRAIN)),
    ("colorectal cancer liver metastasis", ("liver", "healthy liver", LIVER)),
    ("metastases to the liver from breast cancer", ("liver", "healthy liver", LIVER)),
    ("spine metastasis from lung cancer", ("bone", "healthy bone", None)),
    # an organ with a CT window wins over one without
    ("breast and liver lesions", ("liver", "healthy liver", LIVER)),
    ("melanoma metastasis in the lung", ("lung", "healthy lung", LUNG)),
    ("prostate cancer bone metastasis", ("bone", "healthy bone", None)),  # no single DICOM code for bone
    ("breast mass", ("soft_tissue", "healthy breast", BREAST)),  # an organ without a window keeps its words
    ("liver lesion near the lung base", ("liver", "healthy liver", LIVER)),  # among windowed organs: the earliest
    # cues pick the window and the normal prompt but never an anatomic code, and a keyword beats them
    ("thyroid nodule", ("lung", "healthy lung", None)),
    ("nodule in the left lung", ("lung", "healthy lung", LUNG)),
    ("hemorrhage in the brain", ("brain", "healthy brain", BRAIN)),
    ("nodule in the liver", ("liver", "healthy liver", LIVER)),
    ("breast nodule", ("soft_tissue", "healthy breast", BREAST)),
    ("retroperitoneal hemorrhage", ("brain", "healthy brain", None)),
    ("rectal cancer", ("colon", "healthy colon", None)),
    ("lung nodule", ("lung", "healthy lung", LUNG)),
    ("tumor", ("soft_tissue", "healthy tissue", None)),
    ("liverish mass", ("soft_tissue", "healthy tissue", None)),  # whole words only
    ("adrenal mass", ("soft_tissue", "healthy tissue", None)),  # not "renal" inside it: not the kidney
])
def test_prompts_naming_two_organs_or_only_suggesting_one(prompt, expected):
    assert implied(prompt) == expected


def test_the_word_that_chose_the_organ_and_whether_it_names_it():
    assert prompt_organ("Hypodense  HEPATIC lesion") == ("liver", "hepatic", True)
    assert prompt_organ("a nodule") == ("lung", "nodule", False)
    assert prompt_organ(None) == (None, None, False)
    assert window_preset_for("breast mass")[1] == "prompt word 'breast' names the breast, which has no standard CT window"
