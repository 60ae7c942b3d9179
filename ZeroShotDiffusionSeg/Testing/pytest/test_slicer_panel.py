"""Panel settings -> engine request, runner choice, progress text, and the result session."""

import numpy as np
import pytest

from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.runners.local import LocalWorkerRunner
from ZeroShotDiffusionSegLib.slicer.geometry import make_geometry
from ZeroShotDiffusionSegLib.slicer.panel import (
    AXES, DEVICES, MODES, PanelSettings, build_request, create_runner, format_progress, option_value, roi_corners,
    runner_key)
from ZeroShotDiffusionSegLib.slicer.results import TABLE_HEADERS, ResultSession, lesion_centre_ras, table_cells
from ZeroShotDiffusionSegLib.slicer.terminology import NEOPLASM


def test_prompt_settings_become_a_request():
    settings = PanelSettings(prompt="  liver   tumor ", roi_bounds_ras=(-10, 10, 0, 5, 20, 40), kl_threshold=0.9,
                             timestep=150, selection_threshold=0.4, axis="k", batch_size=0, per_lesion=False,
                             seeds_ras=[(1, 2, 3)])
    request = build_request(settings)
    assert request.prompt == "liver tumor" and request.mode == "prompt" and request.seeds == []
    assert request.roi_physical == ((-10.0, 0.0, 20.0), (10.0, 5.0, 40.0)) and request.coordinate_space == "RAS"
    assert request.batch_size is None and request.binary is True and request.axis == "k"
    assert (request.params.kl_threshold, request.params.timestep, request.params.selection_threshold) == (0.9, 150, 0.4)


def test_seed_settings_send_seed_points_in_ras():
    request = build_request(PanelSettings(mode="seed", seeds_ras=[(1, 2, 3), (4.5, 5, 6)], batch_size=8))
    assert request.seeds == [(1.0, 2.0, 3.0), (4.5, 5.0, 6.0)] and request.batch_size == 8 and request.prompt is None


def test_missing_inputs_name_the_widget_to_fix():
    with pytest.raises(UserError, match="pick a preset"):
        build_request(PanelSettings(prompt="  "))
    with pytest.raises(UserError, match="seed point"):
        build_request(PanelSettings(mode="seed"))
    with pytest.raises(UserError, match="ROI is empty"):
        roi_corners((0, 0, 0, 1, 0, 1))
    with pytest.raises(UserError, match="KL threshold"):
        build_request(PanelSettings(prompt="x", kl_threshold=0))
    regions = build_request(PanelSettings(mode="unsupervised", per_lesion=False))
    assert regions.mode == "unsupervised" and regions.binary is False


def test_pseudo_healthy_checkbox_asks_for_the_refinement_in_prompt_and_seed_mode_only():
    from ZeroShotDiffusionSegLib.engine.healthy_params import PseudoHealthyParams

    assert build_request(PanelSettings(prompt="liver tumor")).pseudo_healthy is None
    request = build_request(PanelSettings(prompt="liver tumor", pseudo_healthy=True))
    assert request.pseudo_healthy == PseudoHealthyParams()
    seeded = build_request(PanelSettings(mode="seed", seeds_ras=[(1, 2, 3)], pseudo_healthy=True))
    assert seeded.pseudo_healthy == PseudoHealthyParams()
    with pytest.raises(UserError) as refused:
        build_request(PanelSettings(mode="unsupervised", pseudo_healthy=True))
    message = str(refused.value)
    assert "\n" not in message and "Refine with pseudo-healthy counterfactual" in message
    assert "choose Text prompt or Seed points, or untick it" in message and "--" not in message  # the panel's words


def test_combo_texts_map_to_values():
    assert option_value(MODES, "Seed points") == "seed" and option_value(MODES, "seed") == "seed"
    assert option_value(DEVICES, "CPU") == "cpu" and option_value(AXES, "K (axial-like)") == "k"
    with pytest.raises(UserError):
        option_value(DEVICES, "TPU")


def test_runner_choice_and_warm_reuse_key(tmp_path):
    local = PanelSettings(model="random:tiny", device="cpu", prompt="a")
    assert runner_key(local) == ("local", "random:tiny", "cpu")
    assert runner_key(PanelSettings(model="random:tiny", device="cpu", prompt="b", kl_threshold=0.5)) == runner_key(local)
    runner = create_runner(local, "/usr/bin/python3", pythonpath=["/mods"])
    assert isinstance(runner, LocalWorkerRunner) and runner.command[:3] == ["/usr/bin/python3", "-m",
                                                                             "ZeroShotDiffusionSegLib.worker"]
    remote_settings = PanelSettings(server_url=" http://gpu-box:8000 ", server_token="secret")
    assert not remote_settings.local_engine
    assert runner_key(remote_settings) == ("remote", "http://gpu-box:8000", "secret")
    remote = create_runner(remote_settings, "python")
    assert type(remote).__name__ == "RemoteRunner" and remote.url == "http://gpu-box:8000"


def test_progress_text():
    assert format_progress("segment", 0.451, 130, "18/40 slices") == "segment 45% - about 2 min left (18/40 slices)"
    assert format_progress("read", 0.0, None) == "read 0%"
    assert format_progress("", None, 0.2) == "working - about 1 s left"


def result_session(mode="prompt", per_lesion=True):
    score = np.zeros((4, 12, 12), np.float32)
    score[1:3, 1:6, 1:6] = 0.9
    score[2, 8:10, 8:10] = 0.55
    labels = np.zeros(score.shape, np.uint16)
    labels[score >= 0.5] = 1
    geometry = make_geometry((0, 0, 0), (1.0, 1.0, 2.0), np.eye(3), "RAS")
    return ResultSession(mode, "liver tumor", score, labels, geometry, threshold=0.5, per_lesion=per_lesion)


def test_live_threshold_view_names_colours_and_table():
    session = result_session()
    view = session.view()
    assert [s.name for s in view.segments] == ["liver tumor 1", "liver tumor 2"]
    assert [s.label for s in view.segments] == [1, 2] and view.segments[0].color != view.segments[1].color
    assert view.segments[0].terminology.split("~")[2] == "^".join(NEOPLASM)
    assert view.segments[0].terminology.split("~")[5] == "SCT^10200004^Liver"  # the organ the prompt names
    assert (view.labels == 1).sum() == 50 and (view.labels == 2).sum() == 4
    cells = table_cells(view)
    assert len(cells[0]) == len(TABLE_HEADERS) and cells[0][:2] == ["liver tumor 1", "0.10"]
    assert lesion_centre_ras(view.lesions[1]) == pytest.approx((8.5, 8.5, 4.0))
    higher = session.view(0.6, existing_names=["liver tumor"])
    assert [s.name for s in higher.segments] == ["liver tumor 1"] and higher.labels.max() == 1


def test_a_pseudo_healthy_result_keeps_its_refined_labels_whatever_the_slider():
    session = result_session()
    session.labels[2, 8:10, 8:10] = 0  # the refinement dropped the second candidate
    session.refined = True
    assert not session.live and "pseudo-healthy" in session.threshold_note
    view = session.view(0.1)  # a low threshold would bring it back from the score
    assert np.array_equal(view.labels, session.labels) and [s.name for s in view.segments] == ["liver tumor"]
    assert result_session().threshold_note is None and result_session(mode="seed").threshold_note is None


def test_overlay_list_and_first_choice():
    from ZeroShotDiffusionSegLib.slicer.results import default_overlay, overlay_choices

    plain = {"Score": object()}
    healthy = {"Score": object(), "Residual": object(), "Pseudo-healthy (fade)": object()}
    assert overlay_choices(plain) == ["Score", "None"] and default_overlay(plain) == "Score"
    assert overlay_choices(healthy) == ["Score", "Residual", "Pseudo-healthy (fade)", "None"]
    assert default_overlay(healthy) == "Residual"
    assert overlay_choices({}) == ["None"] and default_overlay({}) == "None"


def test_one_segment_mode_and_non_live_modes():
    single = result_session(per_lesion=False).view()
    assert [s.name for s in single.segments] == ["liver tumor"] and single.labels.sum() == 54
    seed = result_session(mode="seed")
    assert not seed.live
    view = seed.view(0.99)  # the slider does not apply to seed results
    assert view.labels.sum() == 54 and [s.name for s in view.segments] == ["liver tumor"]
    regions = result_session(mode="unsupervised").view()
    assert [s.name for s in regions.segments] == ["Region"] and regions.lesions == []
    assert "Tissue" in regions.segments[0].terminology
