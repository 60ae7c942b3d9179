"""The module's widget driven through its own widgets (real PyQt5, PythonQt's rules, offscreen), on real MRML:
what a click, a typed prompt, a moved slider or a chosen overlay does, down to the slice views and segments."""

import numpy as np
import pytest
import slicer

from scene_builders import expected_labels, oblique_volume, segment_in_volume_grid
from stub_runner import StubRunner
from test_panel_binding import module_widget
from test_result_import import names

pytestmark = pytest.mark.skipif(not getattr(slicer.app, "realQt", False), reason="PyQt5 is not installed")


def slice_layers():
    nodes = slicer.mrmlScene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    layers = {(c.GetBackgroundVolumeID(), c.GetForegroundVolumeID(), round(c.GetForegroundOpacity(), 6))
              for c in (nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems()))}
    assert len(layers) == 1
    return layers.pop()


def log_lines(ui):
    return ui.logTextEdit.toPlainText().splitlines()


@pytest.fixture
def panel():
    volume = oblique_volume()
    widget = module_widget()
    runner = StubRunner()
    widget.logic.runnerFactory = lambda settings: runner
    widget.runner, widget.volume = runner, volume
    yield widget
    widget.cleanup()


def run_through_the_panel(panel):
    """Segment tumor clicked, then the timer's polls until the result is in."""
    ui = panel.ui
    ui.applyButton.click()
    assert ui.applyButton.text == "Cancel" and not ui.progressBar.isHidden() and panel.view.timer.isActive()
    panel.view.onTimer()
    assert ui.progressBar.value == 50 and ui.progressBar.format.startswith("segment 50%")
    panel.view.onTimer()
    assert ui.applyButton.text == "Segment tumor" and ui.progressBar.isHidden() and not panel.view.timer.isActive()
    return panel.logic.result


def test_a_prompt_run_threshold_keep_and_undo_through_the_widgets(panel):
    ui, volume = panel.ui, panel.volume
    from pythonqt import qt_signal

    liver = next(i for i in range(ui.presetComboBox.count) if ui.presetComboBox.itemText(i) == "Liver tumor")
    qt_signal(ui.presetComboBox, "activated(int)").emit(liver)  # what choosing the preset does
    assert ui.promptLineEdit.text == "liver tumor" and ui.presetComboBox.currentIndex == 0
    result = run_through_the_panel(panel)
    segmentation = panel._parameterNode.outputSegmentation
    assert names(segmentation) == ["liver tumor 1", "liver tumor 2"] and ui.lesionTable.rowCount == 2
    assert [ui.lesionTable.item(0, c).text() for c in (0,)] == ["liver tumor 1"]
    assert ui.thresholdSlider.enabled and ui.thresholdSlider.value == 0.5
    assert [ui.overlayComboBox.itemText(i) for i in range(ui.overlayComboBox.count)] == ["Score", "None"]
    assert slice_layers() == (volume.GetID(), result.score_node.GetID(), 0.4)
    ui.thresholdSlider.value = 0.7  # the user drags the slider: lesion 2 (score 0.6) goes, live
    assert names(segmentation) == ["liver tumor"] and ui.lesionTable.rowCount == 1
    assert np.array_equal(segment_in_volume_grid(segmentation, result.segment_ids[0], volume) > 0,
                          expected_labels() == 1)
    ui.overlayOpacitySlider.value = 0.8
    assert slice_layers() == (volume.GetID(), result.score_node.GetID(), 0.8)
    ui.overlayComboBox.setCurrentIndex(1)  # None
    assert slice_layers() == (volume.GetID(), None, 0.8)
    assert ui.keepButton.enabled
    ui.keepButton.click()
    assert result.kept and not ui.keepButton.enabled and "Kept" in log_lines(ui)[-1]
    ui.undoButton.click()
    assert names(segmentation) == [] and panel.logic.result is None and ui.lesionTable.rowCount == 0
    assert not ui.undoButton.enabled and not ui.overlayComboBox.enabled
    assert slicer.mrmlScene.GetFirstNodeByName("CT score") is None


def test_a_pseudo_healthy_run_fades_through_the_overlay_widgets(panel):
    ui, volume = panel.ui, panel.volume
    panel.runner.result_options["healthy"] = True
    ui.promptLineEdit.setText("liver tumor")
    ui.pseudoHealthyCheckBox.setChecked(True)
    result = run_through_the_panel(panel)
    assert panel.runner.requests[-1].pseudo_healthy is not None
    assert not ui.thresholdSlider.enabled and ui.overlayComboBox.currentText == "Residual"
    healthy = result.overlays["Pseudo-healthy (fade)"]
    ui.overlayComboBox.setCurrentIndex(ui.overlayComboBox.findText("Pseudo-healthy (fade)"))
    assert slice_layers() == (volume.GetID(), healthy.GetID(), 0.4)
    ui.overlayOpacitySlider.value = 1.0
    assert slice_layers() == (volume.GetID(), healthy.GetID(), 1.0)


def test_a_second_prompt_replaces_the_first_through_the_panel(panel):
    ui = panel.ui
    ui.promptLineEdit.setText("liver tumor")
    first = run_through_the_panel(panel)
    ui.promptLineEdit.setText("kidney tumor")
    second = run_through_the_panel(panel)
    segmentation = panel._parameterNode.outputSegmentation
    assert names(segmentation) == ["kidney tumor 1", "kidney tumor 2"] and panel.logic.results == [second]
    assert not first.in_scene and any("replaces the previous one" in line for line in log_lines(ui))
    assert len(panel.runner.rescored) == 1  # served from the cache


def test_the_panel_asks_before_undoing_edits_and_keeps_them_when_told_no(panel, monkeypatch):
    ui = panel.ui
    ui.promptLineEdit.setText("liver tumor")
    run_through_the_panel(panel)
    segmentation = panel._parameterNode.outputSegmentation
    segmentation.GetSegmentation().AddEmptySegment("note", "my note")
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **kwargs: False)
    ui.undoButton.click()
    assert names(segmentation) == ["liver tumor 1", "liver tumor 2", "my note"] and panel.logic.result is not None
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **kwargs: True)
    ui.undoButton.click()
    assert names(segmentation) == [] and panel.logic.result is None
