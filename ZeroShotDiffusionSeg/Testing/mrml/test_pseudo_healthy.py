"""A pseudo-healthy run in real MRML: the request, the pseudo-healthy and residual volumes, the overlay and fade
in the slice views, the inert threshold slider, refusals with the scene unchanged.

The panel side is driven through ``RunView`` with stand-in widgets (a combo box and sliders that only hold
their state), so what a click does to the slice composite nodes is checked, not only the Logic.
"""

from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import slicer
import vtk
from ZeroShotDiffusionSegLib.engine.healthy_params import PseudoHealthyParams
from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.slicer.importer import HEALTHY_OF_ROLE
from ZeroShotDiffusionSegLib.slicer.results import REFINED_NOTE
from ZeroShotDiffusionSegLib.slicer.run_view import RunView

from scene_builders import (SHAPE, counterfactual_arrays, expected_labels, linear_transform, oblique_volume,
                            segment_in_volume_grid)
from stub_runner import StubRunner
from test_result_import import existing_segmentation, names, new_logic, scene_state


class Combo:
    """The part of a QComboBox that RunView uses; ``choose`` is what a user's click does."""

    def __init__(self, view=None):
        self.items, self.index, self.enabled, self.blocked, self.view = [], -1, True, False, view

    def blockSignals(self, block):
        previous, self.blocked = self.blocked, block
        return previous

    def clear(self):
        self.items, self.index = [], -1

    def addItems(self, items):
        self.items += list(items)
        self.index = 0 if self.index < 0 and self.items else self.index

    def findText(self, text):
        return self.items.index(text) if text in self.items else -1

    def setCurrentIndex(self, index):
        self.index = index

    @property
    def currentText(self):
        return self.items[self.index] if 0 <= self.index < len(self.items) else ""


class Slider:
    def __init__(self, value=0.5):
        self.value, self.enabled, self.blocked = value, True, False

    def blockSignals(self, block):
        previous, self.blocked = self.blocked, block
        return previous


def panel_view(logic):
    ui = SimpleNamespace(overlayComboBox=Combo(), overlayOpacitySlider=Slider(), thresholdSlider=Slider(),
                         **{name: mock.MagicMock(name=name) for name in (
                             "lesionTable", "refineButton", "keepButton", "undoButton", "logTextEdit", "progressBar", "applyButton",
                             "engineStatusLabel")})
    return RunView(ui, logic, logic.getParameterNode)


def logged(view):
    return [call.args[0] for call in view.ui.logTextEdit.appendPlainText.call_args_list]


def start(logic, volume, pseudo_healthy=True, prompt="liver tumor", segmentation=None, mode="Text prompt"):
    parameters = logic.getParameterNode()
    parameters.inputVolume, parameters.prompt, parameters.outputSegmentation = volume, prompt, segmentation
    parameters.pseudoHealthy, parameters.mode = pseudo_healthy, mode
    return logic.start(parameters, logic.settingsFrom(parameters))


def finish(logic, view=None):
    """Poll to the end; the done event goes through the panel (``view``) or straight to the Logic."""
    events = logic.poll() + logic.poll()
    done = [event for event in events if event.kind == "done"]
    assert len(done) == 1
    if view is None:
        return logic.loadResult(done[0].files)
    view.onFinished(done[0])
    return logic.result


def matrix_values(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return [matrix.GetElement(r, c) for r in range(4) for c in range(4)]


def slice_layers():
    """(background id, foreground id, foreground opacity) of every slice view."""
    nodes = slicer.mrmlScene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    layers = {(c.GetBackgroundVolumeID(), c.GetForegroundVolumeID(), round(c.GetForegroundOpacity(), 6))
              for c in (nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems()))}
    assert nodes.GetNumberOfItems() == 3 and len(layers) == 1, "every slice view shows the same layers"
    return layers.pop()


def in_a_study(volume):
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "patient"), "study")
    hierarchy.SetItemParent(hierarchy.GetItemByDataNode(volume), study)
    return hierarchy, study


def test_the_checkbox_puts_the_refinement_on_the_request_and_a_new_prompt_or_a_toggle_is_served_from_the_cache():
    logic = new_logic(StubRunner(healthy=True))
    start(logic, oblique_volume())
    runner = logic.runner
    assert runner.requests[-1].pseudo_healthy == PseudoHealthyParams()
    first = finish(logic)
    start(logic, logic.getParameterNode().inputVolume, prompt="kidney tumor")  # only the prompt changed: re-scored
    # from the worker's cache, ...
    assert len(runner.requests) == 1 and len(runner.rescored) == 1
    assert runner.rescored[0][1].pseudo_healthy == PseudoHealthyParams()  # ... which runs the repaint again
    second_files = logic.poll() + logic.poll()
    second = logic.loadResult(second_files[-1].files)
    assert logic.cacheNote(second_files[-1].files) == "re-scored from cache and repainted in 1.8 s"
    assert second.overlays["Pseudo-healthy (fade)"] is not first.overlays["Pseudo-healthy (fade)"]
    assert second.session.refined and not second.session.live
    start(logic, logic.getParameterNode().inputVolume, pseudo_healthy=False, prompt="kidney tumor")
    assert len(runner.requests) == 1 and runner.rescored[-1][1].pseudo_healthy is None, "unticked: from the cache"
    finish(logic)
    assert logic.result.session.live  # not refined: the slider works again
    start(logic, logic.getParameterNode().inputVolume, pseudo_healthy=True, prompt="kidney tumor")
    assert len(runner.requests) == 1 and len(runner.rescored) == 3, "ticked again, same prompt: from the cache"
    assert runner.rescored[-1][1].pseudo_healthy == PseudoHealthyParams()
    finish(logic)
    start(logic, logic.getParameterNode().inputVolume, pseudo_healthy=True, prompt="kidney tumor")
    assert len(runner.requests) == 2, "nothing changed: a new run, as before"


def test_unsupervised_with_the_checkbox_is_refused_before_anything_is_exported():
    runner = StubRunner(healthy=True)
    logic = new_logic(runner)
    volume = oblique_volume()
    before = scene_state()
    with pytest.raises(UserError, match="pseudo-healthy") as refused:
        start(logic, volume, mode="Unsupervised regions")
    assert "\n" not in str(refused.value)
    assert runner.requests == [] and logic.workDir is None and logic.runner is None
    assert scene_state() == before and logic.getParameterNode().outputSegmentation is None


def test_pseudo_healthy_and_residual_volumes_lie_on_the_input_grid_with_its_display():
    volume = oblique_volume()
    volume.SetAndObserveTransformNodeID(linear_transform().GetID())
    display = volume.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(123.0, 17.0)
    display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeRainbow")
    hierarchy, study = in_a_study(volume)
    logic = new_logic(StubRunner(healthy=True))
    start(logic, volume)
    result = finish(logic)
    healthy_node, residual_node = result.overlays["Pseudo-healthy (fade)"], result.overlays["Residual"]
    assert (healthy_node.GetName(), residual_node.GetName()) == ("CT pseudo-healthy", "CT residual")
    expected_healthy, expected_residual = counterfactual_arrays(slicer.util.arrayFromVolume(volume))
    for node, expected in ((healthy_node, expected_healthy), (residual_node, expected_residual)):
        assert matrix_values(node) == matrix_values(volume), "not on the input's grid"
        assert node.GetTransformNodeID() == volume.GetTransformNodeID() is not None
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
        values = slicer.util.arrayFromVolume(node)
        assert values.shape == SHAPE and values.dtype == expected.dtype and np.array_equal(values, expected)
    assert slicer.util.arrayFromVolume(healthy_node).dtype == slicer.util.arrayFromVolume(volume).dtype == np.int16
    assert healthy_node.GetNodeReferenceID(HEALTHY_OF_ROLE) == volume.GetID()
    shown = healthy_node.GetDisplayNode()
    assert (shown.GetWindow(), shown.GetLevel(), shown.GetAutoWindowLevel()) == (123.0, 17.0, 0)
    assert shown.GetColorNodeID() == "vtkMRMLColorTableNodeRainbow"
    residual_display, score_display = residual_node.GetDisplayNode(), result.score_node.GetDisplayNode()
    assert residual_display.GetColorNodeID() == score_display.GetColorNodeID()
    assert residual_display.GetApplyThreshold() and residual_display.GetLowerThreshold() == pytest.approx(0.01)
    assert (residual_display.GetWindowLevelMin(), residual_display.GetWindowLevelMax()) == (0.0, 1.0)
    labels = expected_labels()
    for value, segment_id in enumerate(result.segment_ids, start=1):  # the refined labels, as the engine wrote them
        assert np.array_equal(segment_in_volume_grid(logic.getParameterNode().outputSegmentation, segment_id, volume) > 0,
                              labels == value)


def test_overlay_choice_and_opacity_drive_the_slice_views():
    volume = oblique_volume()
    logic = new_logic(StubRunner(healthy=True))
    view = panel_view(logic)
    start(logic, volume)
    result = finish(logic, view)
    combo, opacity = view.ui.overlayComboBox, view.ui.overlayOpacitySlider
    assert combo.items == ["Score", "Residual", "Pseudo-healthy (fade)", "None"] and combo.enabled
    assert combo.currentText == "Residual" and opacity.value == 0.4
    assert not combo.blocked and not opacity.blocked
    residual, healthy = result.overlays["Residual"], result.overlays["Pseudo-healthy (fade)"]
    assert slice_layers() == (volume.GetID(), residual.GetID(), 0.4)
    combo.setCurrentIndex(combo.findText("Pseudo-healthy (fade)"))
    view.onOverlayChanged(combo.index)
    assert slice_layers() == (volume.GetID(), healthy.GetID(), 0.4)
    for value in (0.0, 0.75, 1.0):  # the fade: input only ... pseudo-healthy only
        opacity.value = value
        view.onOverlayChanged(value)
        assert slice_layers() == (volume.GetID(), healthy.GetID(), value)
    combo.setCurrentIndex(combo.findText("None"))
    view.onOverlayChanged(combo.index)
    assert slice_layers() == (volume.GetID(), None, 1.0)

    plain = new_logic(StubRunner())  # a run without the checkbox: the score, as before
    plain_view = panel_view(plain)
    start(plain, volume, pseudo_healthy=False)
    plain_result = finish(plain, plain_view)
    assert plain_view.ui.overlayComboBox.items == ["Score", "None"]
    assert plain_view.ui.overlayComboBox.currentText == "Score" and plain_view.ui.overlayOpacitySlider.value == 0.4
    assert slice_layers() == (volume.GetID(), plain_result.score_node.GetID(), 0.4)
    assert plain_view.ui.thresholdSlider.enabled and REFINED_NOTE not in logged(plain_view)


def test_the_threshold_slider_is_inert_for_a_refined_result_and_the_log_says_why_once():
    volume = oblique_volume()
    logic = new_logic(StubRunner(healthy=True))
    view = panel_view(logic)
    start(logic, volume)
    result = finish(logic, view)
    segmentation = logic.getParameterNode().outputSegmentation
    ids = list(result.segment_ids)
    before = [segment_in_volume_grid(segmentation, i, volume) for i in ids]
    assert not view.ui.thresholdSlider.enabled and not result.session.live
    for value in (0.95, 0.05):  # would drop lesion 2, or grow nothing new: neither may happen
        view.ui.thresholdSlider.value = value
        view.onThresholdChanged(value)
        assert result.segment_ids == ids and names(segmentation) == ["liver tumor 1", "liver tumor 2"]
        assert all(np.array_equal(segment_in_volume_grid(segmentation, i, volume), b) for i, b in zip(ids, before))
    assert logged(view).count(REFINED_NOTE) == 1


def test_a_pseudo_healthy_file_on_another_grid_is_refused_with_the_scene_unchanged():
    volume = oblique_volume()
    node = existing_segmentation(volume)
    logic = new_logic(StubRunner(healthy=True, healthy_spacing_factor=1.25))
    start(logic, volume, segmentation=node)
    before, segments = scene_state(), names(node)
    logic.poll()
    with pytest.raises(UserError, match="different grid"):
        logic.loadResult(logic.poll()[0].files)
    assert scene_state() == before and names(node) == segments == ["kept"] and logic.result is None
