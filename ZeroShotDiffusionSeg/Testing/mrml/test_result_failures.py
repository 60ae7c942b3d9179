"""Every failure to load a result is one line in the panel's words, with the scene as it was (real MRML)."""

import os

import pytest
import slicer
from ZeroShotDiffusionSegLib.errors import UserError

from stub_runner import StubRunner
from test_result_import import existing_segmentation, names, new_logic, scene_state, start
from scene_builders import oblique_volume


def break_files(files, how):
    if how == "no labels entry":
        del files["labels"]
    elif how == "labels file deleted":
        os.remove(files["labels"])
    elif how == "score file corrupt":
        with open(files["score"], "wb") as handle:
            handle.write(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4\n\nnot an image")
    elif how == "healthy file truncated":
        with open(files["healthy"], "r+b") as handle:
            handle.truncate(200)
    elif how == "a path that is no path":
        files["score"] = None
    return files


CASES = ["no labels entry", "labels file deleted", "score file corrupt", "healthy file truncated", "a path that is no path"]


@pytest.mark.parametrize("how", CASES)
def test_a_broken_result_is_one_line_and_the_scene_is_unchanged(how):
    volume = oblique_volume()
    node = existing_segmentation(volume)
    logic = new_logic(StubRunner(healthy=True))
    start(logic, volume, node)
    logic.poll()
    files = break_files(dict(logic.poll()[0].files), how)
    before = scene_state()
    with pytest.raises(UserError) as refused:
        logic.loadResult(files)
    message = str(refused.value)
    assert "\n" not in message and len(message) < 300, message
    assert "nothing was imported" in message or "the scene is as it was" in message
    assert scene_state() == before and names(node) == ["kept"] and logic.result is None


def test_the_panel_shows_a_broken_result_as_one_line(monkeypatch):
    from test_pseudo_healthy import logged, panel_view

    volume = oblique_volume()
    logic = new_logic(StubRunner())
    view = panel_view(logic)
    start(logic, volume)
    logic.poll()
    done = logic.poll()[0]
    os.remove(done.files["score"])
    shown = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kwargs: shown.append((text, kwargs)))
    view.onFinished(done)
    assert len(shown) == 1
    text, options = shown[0]
    assert "\n" not in text and text.startswith("The engine's score file cannot be read")
    assert options["windowTitle"] == "Could not load the result"
    assert f"Could not load the result: {text}" in logged(view) and logic.result is None
