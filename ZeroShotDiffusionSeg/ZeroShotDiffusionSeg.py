"""Segment tumor: zero-shot lesion segmentation from a frozen diffusion model, in 3D Slicer.

This file declares the module and wires the panel to ZeroShotDiffusionSegLib: the Logic is
``slicer/logic.py``, what the panel shows is ``slicer/run_view.py``; both are tested there.
"""

from typing import Annotated

import qt
import slicer
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.slicer import logic, panel
from ZeroShotDiffusionSegLib.slicer.run_view import RunView
from ZeroShotDiffusionSegLib.slicer.terminology import load_presets


class ZeroShotDiffusionSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "Segment tumor (zero-shot diffusion)"
        parent.categories = ["Segmentation"]
        parent.contributors = ["ZeroShotDiffusionSeg developers"]
        parent.helpText = ("Segments tumours zero-shot from a text prompt, seed points or unsupervised, using the "
                           "self-attention of a frozen Stable Diffusion model. Research software, not a medical device.")
        parent.acknowledgementText = ("Based on DiffSeg (Tian et al., CVPR 2024) and ADZUS (Hamrani & Godavarty, 2025). "
                                      "Model weights are licensed separately (CreativeML OpenRAIL-M / Open RAIL++-M).")


DEFAULTS, RANGES = panel.PanelSettings(), panel.RANGES  # defaults: the request dataclasses'; ranges: the .ui's


@parameterNodeWrapper
class ZeroShotDiffusionSegParameterNode:
    """Bound to the .ui by Slicer: combo boxes need Choice, number widgets take their range from the annotation."""

    inputVolume: vtkMRMLScalarVolumeNode
    mode: Annotated[str, Choice(list(panel.MODES))] = panel.option_text(panel.MODES, DEFAULTS.mode)
    prompt: str = DEFAULTS.prompt
    seedPoints: vtkMRMLMarkupsFiducialNode
    roi: vtkMRMLMarkupsROINode
    outputSegmentation: vtkMRMLSegmentationNode
    perLesion: bool = DEFAULTS.per_lesion
    pseudoHealthy: bool = DEFAULTS.pseudo_healthy
    klThreshold: Annotated[float, WithinRange(*RANGES["kl_threshold"])] = DEFAULTS.kl_threshold
    timestep: Annotated[int, WithinRange(*RANGES["timestep"])] = DEFAULTS.timestep
    selectionThreshold: Annotated[float, WithinRange(*RANGES["selection_threshold"])] = DEFAULTS.selection_threshold
    sliceAxis: Annotated[str, Choice(list(panel.AXES))] = panel.option_text(panel.AXES, DEFAULTS.axis)
    batchSize: Annotated[int, WithinRange(*RANGES["batch_size"])] = DEFAULTS.batch_size  # minimum: "Auto"
    minVolume: Annotated[float, WithinRange(*RANGES["min_volume_mm3"])] = DEFAULTS.min_volume_mm3
    device: Annotated[str, Choice(list(panel.DEVICES))] = panel.option_text(panel.DEVICES, DEFAULTS.device)
    model: str = DEFAULTS.model
    serverUrl: str = DEFAULTS.server_url


class ZeroShotDiffusionSegLogic(logic.ZeroShotDiffusionSegLogic):
    """The library's Logic with this module's typed parameter node."""

    def getParameterNode(self):
        return ZeroShotDiffusionSegParameterNode(super().getParameterNode())


class ZeroShotDiffusionSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Loads the .ui, binds it to the parameter node and connects its signals to the Logic and the RunView."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic, self.view, self._parameterNode, self._guiTag = None, None, None, None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ZeroShotDiffusionSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ZeroShotDiffusionSegLogic()
        self.view = RunView(self.ui, self.logic, lambda: self._parameterNode)
        self.view.setupWidgets(load_presets(self.resourcePath("Presets/prompts.json")))
        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.ui.presetComboBox.connect("activated(int)", self.view.onPresetChosen)  # not the QString overload
        self.ui.modelFolderButton.clicked.connect(self.view.onChooseModelFolder)
        self.ui.restartEngineButton.clicked.connect(self.view.onRestartEngine)
        self.view.connectResultWidgets()
        self.shortcut = qt.QShortcut(qt.QKeySequence("Ctrl+Return"), uiWidget)
        self.shortcut.setContext(qt.Qt.WidgetWithChildrenShortcut)  # only while this panel has focus
        self.shortcut.activated.connect(self.onApplyButton)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.view.updateResults()

    def cleanup(self):
        self.view.timer.stop()
        self.removeObservers()
        self.setParameterNode(None)  # unbound: the node outlives these widgets (module reload)
        if self.logic:
            self.logic.shutdown()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self.setParameterNode(self._parameterNode, connect=False)

    def onSceneStartClose(self, caller, event):
        self.logic.cancel()
        self.view.timer.stop()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        self.view.forgetResult()
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode, connect=True):
        if self._parameterNode and self._guiTag is not None:  # the first tag connectGui returns is 0
            self._parameterNode.disconnectGui(self._guiTag)
        self._parameterNode, self._guiTag = parameterNode, None
        if parameterNode and connect:
            self._guiTag = parameterNode.connectGui(self.ui)

    def onApplyButton(self):
        self.view.onApply(self.resourcePath("requirements.txt"))


class ZeroShotDiffusionSegTest(ScriptedLoadableModuleTest):
    """Quick checks for Reload and Test; the full self-test is Testing/Python/ZeroShotDiffusionSegModuleTest.py."""

    def runTest(self):
        moduleLogic = ZeroShotDiffusionSegLogic(runnerFactory=lambda settings: None)
        settings = moduleLogic.settingsFrom(moduleLogic.getParameterNode())
        self.assertEqual((settings.mode, settings.device, settings.axis), ("prompt", "auto", "auto"))
        self.assertRaises(UserError, panel.build_request, settings)  # no prompt typed yet
        self.assertFalse(moduleLogic.busy)
