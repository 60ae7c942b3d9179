"""Segment tumor: zero-shot lesion segmentation from a frozen diffusion model, in 3D Slicer.

This file only wires MRML nodes and widgets to ZeroShotDiffusionSegLib; every decision
(validation, naming, terminology, threshold, setup order, error wording, the worker) is
in the library and tested with pytest there.
"""

import os
import shutil
import sys

import qt
import slicer
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.slicer import mrml, panel, setup_state
from ZeroShotDiffusionSegLib.slicer.messages import explain, no_gpu_message, worker_crash_message
from ZeroShotDiffusionSegLib.slicer.results import TABLE_HEADERS, table_cells
from ZeroShotDiffusionSegLib.slicer.terminology import load_presets

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
SETTINGS_PREFIX = "ZeroShotDiffusionSeg/"


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


@parameterNodeWrapper
class ZeroShotDiffusionSegParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    mode: str = "Text prompt"
    prompt: str = ""
    seedPoints: vtkMRMLMarkupsFiducialNode
    roi: vtkMRMLMarkupsROINode
    outputSegmentation: vtkMRMLSegmentationNode
    perLesion: bool = True
    klThreshold: float = 1.1
    timestep: int = 300
    selectionThreshold: float = 0.5
    sliceAxis: str = "Auto (closest to axial)"
    batchSize: int = 0
    minVolume: float = 0.0
    device: str = "Auto (GPU if available)"
    model: str = panel.DEFAULT_MODEL
    serverUrl: str = ""


class ZeroShotDiffusionSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._guiTag = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ZeroShotDiffusionSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ZeroShotDiffusionSegLogic()
        self.presets = load_presets(self.resourcePath("Presets/prompts.json"))
        self.ui.modeComboBox.addItems(list(panel.MODES))
        self.ui.sliceAxisComboBox.addItems(list(panel.AXES))
        self.ui.deviceComboBox.addItems(list(panel.DEVICES))
        self.ui.presetComboBox.addItems(["Presets..."] + [p.label for p in self.presets])
        self.ui.lesionTable.setColumnCount(len(TABLE_HEADERS))
        self.ui.lesionTable.setHorizontalHeaderLabels(TABLE_HEADERS)
        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.ui.presetComboBox.connect("activated(int)", self.onPresetChosen)  # not the QString overload
        self.ui.modelFolderButton.clicked.connect(self.onChooseModelFolder)
        self.ui.restartEngineButton.clicked.connect(self.onRestartEngine)
        self.ui.thresholdSlider.valueChanged.connect(self.onThresholdChanged)
        self.ui.showScoreCheckBox.toggled.connect(lambda show: self.logic.result and self.logic.result.show_score(show))
        self.ui.lesionTable.cellClicked.connect(lambda row, column: self.logic.result.centre_on_lesion(row))
        self.ui.refineButton.clicked.connect(lambda: self.logic.result.open_in_segment_editor())
        self.ui.undoButton.clicked.connect(self.onUndo)
        self.shortcut = qt.QShortcut(qt.QKeySequence("Ctrl+Return"), uiWidget)
        self.shortcut.setContext(qt.Qt.WidgetWithChildrenShortcut)  # only while this panel has focus
        self.shortcut.activated.connect(self.onApplyButton)
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onTimer)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.updateResultsUI()
        self.ui.engineStatusLabel.text = f"not started ({setup_state.installed_summary()})"

    def cleanup(self):
        self.timer.stop()
        self.removeObservers()
        if self.logic:
            self.logic.shutdown()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiTag)
            self._guiTag = None

    def onSceneStartClose(self, caller, event):
        self.logic.cancel()
        self.timer.stop()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        self.logic.result = None  # its nodes are gone with the scene
        self.updateResultsUI()
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode):
        if self._parameterNode and self._guiTag:
            self._parameterNode.disconnectGui(self._guiTag)
        self._parameterNode = parameterNode
        if parameterNode:
            self._guiTag = parameterNode.connectGui(self.ui)

    def log(self, text):
        self.ui.logTextEdit.appendPlainText(text)

    def setRunning(self, running):
        self.ui.applyButton.text = "Cancel" if running else "Segment tumor"
        self.ui.progressBar.visible = running
        self.timer.start() if running else self.timer.stop()

    def onApplyButton(self):
        if self.logic.busy:
            self.logic.cancel()
            return
        with slicer.util.tryWithErrorDisplay("Cannot start the segmentation.", waitCursor=True):
            settings = self.logic.settingsFrom(self._parameterNode, self.ui.serverTokenLineEdit.text)
            if not self.logic.setupEngine(settings, self.resourcePath("requirements.txt")):
                return
            self.ui.progressBar.value = 0
            self.logic.start(self._parameterNode, settings, self.presets)
            self.log(f"Started: {settings.mode}, engine {self.logic.runner.describe()}")
            self.setRunning(True)

    def onTimer(self):
        for event in self.logic.poll():
            if event.job_id not in (None, self.logic.jobId):
                continue  # late events of a run that was cancelled
            if event.kind == "progress":
                self.ui.progressBar.value = int(100 * (event.fraction or 0))
                self.ui.progressBar.setFormat(panel.format_progress(event.stage, event.fraction, event.eta_s, event.message))
            elif event.kind in ("log", "ready"):
                self.log(event.message or f"Engine ready: {event.info}")
                self.ui.engineStatusLabel.text = self.logic.runner.describe()
                if event.kind == "ready" and str(event.info.get("device", "")).startswith("cpu"):
                    self.offerCpu()
            elif event.final:
                self.setRunning(False)
                self.onFinished(event)

    def offerCpu(self):
        """No GPU was found although the user did not ask for the CPU: say how long it takes, let them stop."""
        if self._parameterNode.device == "CPU" or slicer.app.testingEnabled():
            return
        message = no_gpu_message(self.logic.pending.volume.GetImageData().GetDimensions()[2])
        if not slicer.util.confirmOkCancelDisplay(message.text + " Continue on the CPU?", windowTitle=message.title):
            self.logic.cancel()

    def onFinished(self, event):
        if event.kind == "done":
            with slicer.util.tryWithErrorDisplay("Could not load the result.", waitCursor=True):
                for line in event.messages:
                    self.log(line)
                self.logic.loadResult(event.files)
                self.updateResultsUI(resetSlider=True)
            return
        if event.kind == "cancelled":
            self.log("Cancelled.")
            return
        crashed = event.kind == "crashed"
        message = worker_crash_message(event.info.get("exit_code"), event.log_tail) if crashed else explain(event.message, event.log_tail)
        self.log(f"{message.title}: {message.text}\n{message.detail}")
        slicer.util.errorDisplay(message.text, windowTitle=message.title, detailedText=message.detail)

    def updateResultsUI(self, resetSlider=False):
        result = self.logic.result
        session, view = (result.session, result.view) if result else (None, None)
        self.ui.thresholdSlider.enabled = bool(session and session.live)
        if session and session.live and resetSlider:
            wasBlocked = self.ui.thresholdSlider.blockSignals(True)  # no live update while we set it
            self.ui.thresholdSlider.value = session.threshold
            self.ui.thresholdSlider.blockSignals(wasBlocked)
        cells = table_cells(view) if view else []
        self.ui.lesionTable.setRowCount(len(cells))
        for row, values in enumerate(cells):
            for column, text in enumerate(values):
                self.ui.lesionTable.setItem(row, column, qt.QTableWidgetItem(text))
        for button in (self.ui.refineButton, self.ui.undoButton):
            button.enabled = view is not None

    def onThresholdChanged(self, value):
        if self.logic.result:
            self.logic.result.apply_threshold(value)
            self.updateResultsUI()

    def onPresetChosen(self, index):
        if index > 0:
            self._parameterNode.prompt = self.presets[index - 1].prompt
            self._parameterNode.mode = "Text prompt"
        self.ui.presetComboBox.setCurrentIndex(0)

    def onChooseModelFolder(self):
        folder = qt.QFileDialog.getExistingDirectory(None, "Local diffusers model folder (model_index.json)")
        if folder:
            self._parameterNode.model = folder

    def onRestartEngine(self):
        self.logic.shutdown()
        self.setRunning(False)
        self.ui.engineStatusLabel.text = "stopped; starts again on the next run"

    def onUndo(self):
        if self.logic.result:
            self.logic.result.undo()
        self.updateResultsUI()


def pythonExecutable():
    """Slicer's own Python for the worker, so it sees the packages the setup installed."""
    return shutil.which("PythonSlicer") or sys.executable


class ZeroShotDiffusionSegLogic(ScriptedLoadableModuleLogic):
    """Starts runs and imports results. ``runnerFactory(settings) -> Runner`` is injectable (tests pass a stub)."""

    def __init__(self, runnerFactory=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.runnerFactory = runnerFactory or (lambda s: panel.create_runner(s, pythonExecutable(), [MODULE_DIR]))
        self.runner, self.runnerKey, self.pending, self.result, self.workDir, self.jobId = (None,) * 6
        self.uploadConsent = set()  # server URLs the user agreed to send volumes to, this session

    def getParameterNode(self):
        return ZeroShotDiffusionSegParameterNode(super().getParameterNode())

    @property
    def busy(self):
        return self.runner is not None and self.runner.busy

    def settingsFrom(self, p, token=""):
        seeds = []
        if p.seedPoints:
            seeds = [tuple(p.seedPoints.GetNthControlPointPositionWorld(i)) for i in range(p.seedPoints.GetNumberOfControlPoints())]
        bounds = None
        if p.roi:
            bounds = [0.0] * 6
            p.roi.GetRASBounds(bounds)
        return panel.PanelSettings(
            mode=panel.option_value(panel.MODES, p.mode), prompt=p.prompt, seeds_ras=seeds, roi_bounds_ras=bounds,
            kl_threshold=p.klThreshold, timestep=p.timestep, selection_threshold=p.selectionThreshold,
            axis=panel.option_value(panel.AXES, p.sliceAxis), batch_size=p.batchSize, min_volume_mm3=p.minVolume,
            per_lesion=p.perLesion, device=panel.option_value(panel.DEVICES, p.device), model=p.model,
            server_url=p.serverUrl, server_token=token)

    def setupEngine(self, settings, requirementsPath):
        """First-use setup (order and consent rules: setup_state); True when the engine can run."""
        requirements = setup_state.requirements_for_engine(setup_state.read_requirements_file(requirementsPath),
                                                           settings.local_engine)
        setup = setup_state.EngineSetup(mrml.setup_hooks(requirements, SETTINGS_PREFIX), settings.model,
                                        testing=slicer.app.testingEnabled(), local_engine=settings.local_engine)
        state = setup.run()
        url = settings.server_url.strip()
        if setup.ready and url and url not in self.uploadConsent and not slicer.app.testingEnabled():
            if not slicer.util.confirmOkCancelDisplay(f"The volume will be uploaded to {url}: patient data leaves "
                                                      "this computer. Continue?", windowTitle="Remote engine"):
                return False
            self.uploadConsent.add(url)
        if state == setup_state.SetupState.RESTART_REQUIRED:
            if slicer.util.confirmOkCancelDisplay(setup.message + " Restart now?"):
                slicer.util.restart()
        elif state == setup_state.SetupState.FAILED:
            raise UserError(setup.message)
        elif not setup.ready:
            slicer.util.infoDisplay(setup.message)
        return setup.ready

    def start(self, p, settings, presets=()):
        request = panel.build_request(settings)
        # The request, not the panel: a point list left selected in prompt mode carries no seeds.
        mrml.check_input_volume(p.inputVolume, bool(request.seeds or request.roi_physical))
        if not p.outputSegmentation:
            p.outputSegmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{p.inputVolume.GetName()} tumor")
        key = panel.runner_key(settings)
        if self.runner is None or key != self.runnerKey:  # same engine settings: keep the warm worker
            self.shutdown()
            self.runner, self.runnerKey = self.runnerFactory(settings), key
        self.removeWorkDir()
        self.workDir = slicer.util.tempDirectory("ZeroShotDiffusionSeg")
        inputPath = os.path.join(self.workDir, "input.nrrd")
        slicer.util.exportNode(p.inputVolume, inputPath)
        self.pending = mrml.ResultImporter(p.inputVolume, p.outputSegmentation, request, presets)
        self.jobId = self.runner.start(inputPath, os.path.join(self.workDir, "result"), request).job_id
        return self.jobId

    def poll(self):
        return self.runner.poll() if self.runner else []

    def loadResult(self, files):
        self.result = self.pending.load(files)

    def cancel(self):
        if self.runner:
            self.runner.cancel()

    def removeWorkDir(self):
        if self.workDir:
            shutil.rmtree(self.workDir, ignore_errors=True)
            self.workDir = None

    def shutdown(self):
        if self.runner:
            self.runner.shutdown()
        self.runner, self.runnerKey = None, None
        self.removeWorkDir()


class ZeroShotDiffusionSegTest(ScriptedLoadableModuleTest):
    """Quick checks for Reload and Test; the full run with a stub runner (sample volume, segment names,
    geometry, undo) is Testing/Python/ZeroShotDiffusionSegModuleTest.py."""

    def runTest(self):
        slicer.mrmlScene.Clear()
        logic = ZeroShotDiffusionSegLogic(runnerFactory=lambda settings: None)
        settings = logic.settingsFrom(logic.getParameterNode())
        self.assertEqual((settings.mode, settings.device, settings.axis), ("prompt", "auto", "auto"))
        with self.assertRaises(UserError):
            panel.build_request(settings)  # no prompt typed yet
        self.assertFalse(logic.busy)
