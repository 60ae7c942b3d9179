"""The module file, its Logic and RunView against stand-ins for slicer/qt/vtk (no slicer-core needed).

This catches what static checks cannot: wrong attribute names, parameter-node defaults that
are not among the combo-box items, the warm-runner reuse, and the order of start-up steps.
What needs real MRML (segments, geometry, transforms, undo) is in Testing/mrml (slicer-core wheel).
"""

import importlib
import sys
import types
import unittest
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

from ZeroShotDiffusionSegLib.runners.base import JobHandle, Runner
from ZeroShotDiffusionSegLib.slicer import panel

MODULE_DIR = Path(__file__).resolve().parents[2]


class RecordingRunner(Runner):
    instances = []

    def __init__(self, settings):
        self.settings, self.started, self.stopped = settings, [], False
        RecordingRunner.instances.append(self)

    busy = property(lambda self: False)

    def start(self, input_path, out_dir, request):
        self.started.append((input_path, out_dir, request))
        return JobHandle(input_path, out_dir)

    def poll(self):
        return []

    def cancel(self):
        pass

    def shutdown(self):
        self.stopped = True


SLICER_BOUND = ("ZeroShotDiffusionSeg", "ZeroShotDiffusionSegLib.slicer.mrml", "ZeroShotDiffusionSegLib.slicer.importer",
                "ZeroShotDiffusionSegLib.slicer.logic", "ZeroShotDiffusionSegLib.slicer.run_view",
                "ZeroShotDiffusionSegLib.slicer.scene_state")


@pytest.fixture
def module(monkeypatch, tmp_path):
    slicer = types.ModuleType("slicer")
    for name in ("vtkMRMLMarkupsFiducialNode", "vtkMRMLMarkupsROINode", "vtkMRMLScalarVolumeNode",
                 "vtkMRMLSegmentationNode"):
        setattr(slicer, name, type(name, (), {}))
    slicer.vtkMRMLTransformNode = mock.MagicMock(name="vtkMRMLTransformNode")
    slicer.vtkSegmentationConverter = mock.MagicMock(name="vtkSegmentationConverter")
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.Choice = wrapper.WithinRange = lambda *args: ("validator", args)
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self):
            pass

        def getParameterNode(self):
            return mock.MagicMock()

    scripted.ScriptedLoadableModule = ScriptedLoadableModule
    scripted.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    scripted.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidget", (), {})
    scripted.ScriptedLoadableModuleTest = unittest.TestCase
    util = mock.MagicMock(name="slicer.util")
    util.VTKObservationMixin = type("VTKObservationMixin", (), {"__init__": lambda self: None})
    slicer.util, slicer.mrmlScene, slicer.app = util, mock.MagicMock(), mock.MagicMock()
    slicer.app.testingEnabled.return_value, slicer.app.temporaryPath = True, str(tmp_path)
    for name, value in {"slicer": slicer, "slicer.util": util, "slicer.parameterNodeWrapper": wrapper,
                        "slicer.ScriptedLoadableModule": scripted, "qt": mock.MagicMock(), "vtk": mock.MagicMock()}.items():
        monkeypatch.setitem(sys.modules, name, value)
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    for name in SLICER_BOUND:
        monkeypatch.delitem(sys.modules, name, raising=False)
    loaded = importlib.import_module("ZeroShotDiffusionSeg")
    yield loaded
    for name in SLICER_BOUND:
        sys.modules.pop(name, None)  # the stand-ins must not leak into other tests
    import ZeroShotDiffusionSegLib.slicer as package
    for name in SLICER_BOUND:
        package.__dict__.pop(name.rpartition(".")[2], None)


def volume_node(name="CT", dims=(40, 30, 20), components=1, class_name="vtkMRMLScalarVolumeNode"):
    image = SimpleNamespace(GetNumberOfScalarComponents=lambda: components, GetDimensions=lambda: dims, GetMTime=lambda: 1)
    return SimpleNamespace(GetImageData=lambda: image, GetClassName=lambda: class_name, GetName=lambda: name, GetID=lambda: name,
                           GetParentTransformNode=lambda: None, GetIJKToRASMatrix=lambda matrix: None)


def segmentation_node():
    node = mock.MagicMock(name="segmentation node")
    node.GetSegmentation.return_value.GetNumberOfSegments.return_value = 0
    node.GetSegmentation.return_value.GetConversionParameter.return_value = ""  # no reference geometry of its own
    return node


def parameters(module, **values):
    defaults = {k: v for k, v in vars(module.ZeroShotDiffusionSegParameterNode).items() if not k.startswith("_")}
    defaults.update(inputVolume=None, seedPoints=None, roi=None, outputSegmentation=None)
    defaults.update(values)
    return SimpleNamespace(**defaults)


def test_module_metadata_for_the_generic_test(module):
    parent = SimpleNamespace()
    module.ZeroShotDiffusionSeg(parent)
    assert parent.categories == ["Segmentation"] and parent.contributors and parent.helpText
    assert "OpenRAIL" in parent.acknowledgementText


def test_parameter_defaults_are_items_of_their_combo_boxes(module):
    defaults = module.ZeroShotDiffusionSegParameterNode
    assert defaults.mode in panel.MODES and defaults.sliceAxis in panel.AXES and defaults.device in panel.DEVICES
    assert defaults.model == panel.DEFAULT_MODEL and defaults.serverUrl == ""
    assert defaults.pseudoHealthy is False


def test_the_pseudo_healthy_parameter_reaches_the_request(module):
    logic = module.ZeroShotDiffusionSegLogic(runnerFactory=RecordingRunner)
    assert panel.build_request(logic.settingsFrom(parameters(module, prompt="x"))).pseudo_healthy is None
    settings = logic.settingsFrom(parameters(module, prompt="liver tumor", pseudoHealthy=True))
    assert settings.pseudo_healthy is True and panel.build_request(settings).pseudo_healthy is not None


def test_settings_read_seeds_in_world_coordinates_and_roi_bounds(module):
    class Points:
        def GetNumberOfControlPoints(self):
            return 2

        def GetNthControlPointPositionWorld(self, index):
            return [(1.0, 2.0, 3.0), (4.0, 5.0, 6.0)][index]

    class Roi:
        def GetRASBounds(self, bounds):
            bounds[:] = [-1.0, 1.0, -2.0, 2.0, -3.0, 3.0]

    logic = module.ZeroShotDiffusionSegLogic(runnerFactory=RecordingRunner)
    settings = logic.settingsFrom(parameters(module, mode="Seed points", seedPoints=Points(), roi=Roi(),
                                             device="CPU", sliceAxis="K (axial-like)"), token="t0ken")
    assert settings.seeds_ras == [(1.0, 2.0, 3.0), (4.0, 5.0, 6.0)]
    assert settings.roi_bounds_ras == [-1.0, 1.0, -2.0, 2.0, -3.0, 3.0]
    assert (settings.mode, settings.device, settings.axis, settings.server_token) == ("seed", "cpu", "k", "t0ken")
    request = panel.build_request(settings)
    assert request.roi_physical == ((-1.0, -2.0, -3.0), (1.0, 2.0, 3.0))


def test_setup_is_skipped_in_testing_mode(module):
    logic = module.ZeroShotDiffusionSegLogic(runnerFactory=RecordingRunner)
    assert logic.setupEngine(panel.PanelSettings(prompt="x"), MODULE_DIR / "Resources" / "requirements.txt")
    module.slicer.util.pip_install.assert_not_called()


def test_start_exports_the_volume_and_keeps_the_warm_runner(module, tmp_path):
    RecordingRunner.instances.clear()
    logic = module.ZeroShotDiffusionSegLogic(runnerFactory=RecordingRunner)
    p = parameters(module, inputVolume=volume_node(), prompt="liver tumor", outputSegmentation=segmentation_node())
    job_id = logic.start(p, logic.settingsFrom(p))
    exported_volume, exported_path = module.slicer.util.exportNode.call_args[0]
    work_dir = Path(exported_path).parent
    assert exported_volume is p.inputVolume and exported_path == str(work_dir / "input.nrrd")
    assert work_dir.parent == tmp_path and work_dir.name.startswith("ZeroShotDiffusionSeg-")
    runner = RecordingRunner.instances[0]
    input_path, out_dir, request = runner.started[0]
    assert (input_path, out_dir, request.prompt) == (exported_path, str(work_dir / "result"), "liver tumor")
    assert logic.jobId == job_id and logic.pending.volume is p.inputVolume
    logic.start(p, logic.settingsFrom(p))  # same engine settings: same (warm) runner
    assert len(RecordingRunner.instances) == 1 and len(runner.started) == 2
    p.device = "CPU"
    logic.start(p, logic.settingsFrom(p))  # another device: the old worker is shut down, a new one started
    assert len(RecordingRunner.instances) == 2 and runner.stopped


def test_start_refuses_wrong_inputs_before_any_export(module):
    from ZeroShotDiffusionSegLib.errors import UserError

    logic = module.ZeroShotDiffusionSegLogic(runnerFactory=RecordingRunner)
    with pytest.raises(UserError, match="Choose an input volume"):
        logic.start(parameters(module, prompt="x"), panel.PanelSettings(prompt="x"))
    rgb = parameters(module, inputVolume=volume_node(components=3), prompt="x")
    with pytest.raises(UserError, match="several components"):
        logic.start(rgb, logic.settingsFrom(rgb))
    empty_prompt = parameters(module, inputVolume=volume_node(), prompt=" ")
    with pytest.raises(UserError, match="pick a preset"):
        logic.start(empty_prompt, logic.settingsFrom(empty_prompt))
    module.slicer.util.exportNode.assert_not_called()


def test_widget_timer_routes_events_of_the_current_job_only(module):
    from ZeroShotDiffusionSegLib.runners.base import RunnerEvent

    widget = module.RunView(mock.MagicMock(), module.ZeroShotDiffusionSegLogic(runnerFactory=RecordingRunner),
                            lambda: parameters(module))
    widget.timer = mock.MagicMock()
    widget.logic.runner, widget.logic.jobId = mock.MagicMock(), "current"
    widget.logic.runner.describe.return_value = "local worker (model m, device cuda)"
    widget.logic.loadResult = mock.MagicMock()
    widget.logic.runner.poll.return_value = [
        RunnerEvent("cancelled", "old"),  # late final event of a cancelled run: must not stop this one
        RunnerEvent("progress", "current", stage="segment", fraction=0.25, eta_s=120.0, message="5/20 slices"),
        RunnerEvent("ready", info={"model": "m", "device": "cuda"}),
        RunnerEvent("done", "current", files={"labels": "l.nrrd", "score": "s.nrrd"}, messages=["1 lesion(s)"]),
    ]
    widget.onTimer()
    assert widget.ui.progressBar.value == 25
    widget.ui.progressBar.setFormat.assert_called_with("segment 25% - about 2 min left (5/20 slices)")
    assert widget.ui.engineStatusLabel.text == "local worker (model m, device cuda)"
    widget.logic.loadResult.assert_called_once_with({"labels": "l.nrrd", "score": "s.nrrd"})
    widget.timer.stop.assert_called_once()
    assert widget.ui.applyButton.text == "Segment tumor"
    logged = [c.args[0] for c in widget.ui.logTextEdit.appendPlainText.call_args_list]
    assert "1 lesion(s)" in logged and not any("Cancelled" in line for line in logged)


def test_widget_explains_an_out_of_memory_error(module):
    from ZeroShotDiffusionSegLib.runners.base import RunnerEvent

    widget = module.RunView(mock.MagicMock(), module.ZeroShotDiffusionSegLogic(runnerFactory=RecordingRunner),
                            lambda: parameters(module))
    widget.onFinished(RunnerEvent("error", "j", message="out of memory: CUDA out of memory. Tried to allocate 2 GiB"))
    text = module.slicer.util.errorDisplay.call_args.args[0]
    assert "ROI" in text and module.slicer.util.errorDisplay.call_args.kwargs["windowTitle"] == "Out of memory"
