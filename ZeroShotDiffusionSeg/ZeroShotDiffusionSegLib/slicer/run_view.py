"""What the panel shows while a run goes and after it: progress, log, errors, the results block.

Widget wiring that is not Slicer module boilerplate, kept out of the module file so that it stays a
shell (SlicerNNUnet's layout). ``RunView`` gets the ``ui`` namespace, the Logic and a callable returning
the current parameter node, and owns the timer that polls the runner. Dialogs are opened here, never
from the Logic.
"""

from __future__ import annotations

import qt
import slicer

from ..errors import UserError
from . import panel, setup_state
from .importer import EditedResultError
from .messages import explain, no_gpu_message, worker_crash_message
from .results import DEFAULT_OPACITY, TABLE_HEADERS, default_overlay, overlay_choices, table_cells


class RunView:
    def __init__(self, ui, logic, parameterNode):
        self.ui, self.logic, self.parameterNode, self.presets = ui, logic, parameterNode, ()
        self.timer = qt.QTimer()  # polls the runner while a job runs; Slicer never waits on the engine
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onTimer)

    def setupWidgets(self, presets):
        self.presets = presets
        self.ui.engineStatusLabel.text = f"not started ({setup_state.installed_summary()})"
        self.ui.presetComboBox.addItems(["Presets..."] + [p.label for p in presets])
        self.ui.lesionTable.setColumnCount(len(TABLE_HEADERS))
        self.ui.lesionTable.setHorizontalHeaderLabels(TABLE_HEADERS)

    def connectResultWidgets(self):
        """The Results section's signals: threshold, overlay and its opacity, lesion table, editor, keep, undo."""
        self.ui.thresholdSlider.valueChanged.connect(self.onThresholdChanged)
        self.ui.overlayComboBox.connect("currentIndexChanged(int)", self.onOverlayChanged)  # not the QString overload
        self.ui.overlayOpacitySlider.valueChanged.connect(self.onOverlayChanged)
        self.ui.lesionTable.cellClicked.connect(self.onLesionClicked)
        self.ui.refineButton.clicked.connect(self.onRefine)
        self.ui.keepButton.clicked.connect(self.onKeep)
        self.ui.undoButton.clicked.connect(self.onUndo)

    def onApply(self, requirementsPath):
        """Segment tumor: set up the engine on first use, then start a run; Cancel while one runs."""
        if self.logic.busy:
            self.logic.cancel()
            return
        with slicer.util.tryWithErrorDisplay("Cannot start the segmentation.", waitCursor=True):
            settings = self.logic.settingsFrom(self.parameterNode(), self.ui.serverTokenLineEdit.text)
            if not self.logic.setupEngine(settings, requirementsPath):
                return
            self.ui.progressBar.value = 0
            self.logic.start(self.parameterNode(), settings)
            self.log(f"Started: {settings.mode}, engine {self.logic.runner.describe()}")
            self.setRunning(True)

    def onPresetChosen(self, index):
        if index > 0:
            self.parameterNode().prompt = self.presets[index - 1].prompt
            self.parameterNode().mode = "Text prompt"
        self.ui.presetComboBox.setCurrentIndex(0)

    def onChooseModelFolder(self):
        folder = qt.QFileDialog.getExistingDirectory(None, "Local diffusers model folder (model_index.json)")
        if folder:
            self.parameterNode().model = folder

    def onRestartEngine(self):
        self.logic.shutdown()
        self.setRunning(False)
        self.ui.engineStatusLabel.text = "stopped; starts again on the next run"

    def log(self, text):
        self.ui.logTextEdit.appendPlainText(text)

    def setRunning(self, running):
        self.ui.applyButton.text = "Cancel" if running else "Segment tumor"
        self.ui.progressBar.visible = running
        self.timer.start() if running else self.timer.stop()

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
        if self.parameterNode().device == "CPU" or slicer.app.testingEnabled():
            return
        message = no_gpu_message(self.logic.pending.volume.GetImageData().GetDimensions()[2])
        if not slicer.util.confirmOkCancelDisplay(message.text + " Continue on the CPU?", windowTitle=message.title):
            self.logic.cancel()

    def onFinished(self, event):
        if event.kind == "done":
            for line in event.messages:
                self.log(line)
            try:
                result = self.logic.loadResult(event.files)
            except UserError as error:  # one line in the panel's words; the scene is as it was
                self.log(f"Could not load the result: {error}")
                slicer.util.errorDisplay(str(error), windowTitle="Could not load the result")
                return
            if self.logic.replaced is not None:
                self.log("The new result replaces the previous one (Keep result keeps a result when you run again).")
            if result.session.threshold_note:
                self.log(result.session.threshold_note)  # once per result: the slider is off
            note = self.logic.cacheNote(event.files)
            if note:
                self.log(note)
                self.ui.engineStatusLabel.text = f"{self.logic.runner.describe()}; {note}"
            self.updateResults(resetSlider=True)
            return
        if event.kind == "cancelled":
            self.log("Cancelled.")
            return
        crashed = event.kind == "crashed"
        message = worker_crash_message(event.info.get("exit_code"), event.log_tail) if crashed else explain(event.message, event.log_tail)
        self.log(f"{message.title}: {message.text}\n{message.detail}")
        slicer.util.errorDisplay(message.text, windowTitle=message.title, detailedText=message.detail)

    def updateResults(self, resetSlider=False):
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
        self.ui.keepButton.enabled = view is not None and not result.kept
        if resetSlider or not result:
            self.listOverlays(result)

    def listOverlays(self, result):
        """The overlay list of ``result`` with the overlay it shows first chosen, at the default opacity."""
        available = result.overlays if result else {}
        combo, slider = self.ui.overlayComboBox, self.ui.overlayOpacitySlider
        blocked = combo.blockSignals(True), slider.blockSignals(True)  # the importer already shows the default
        combo.clear()
        combo.addItems(overlay_choices(available))
        combo.setCurrentIndex(combo.findText(default_overlay(available)))
        slider.value = DEFAULT_OPACITY
        combo.blockSignals(blocked[0])
        slider.blockSignals(blocked[1])
        combo.enabled = slider.enabled = bool(result)

    def forgetResult(self):
        """After the scene was closed: the results' nodes are gone."""
        self.logic.results.clear()
        self.updateResults()

    def onThresholdChanged(self, value):
        if self.logic.result:
            self.logic.result.apply_threshold(value)
            self.updateResults()

    def onOverlayChanged(self, *_):
        if self.logic.result:
            self.logic.result.show_overlay(self.ui.overlayComboBox.currentText, self.ui.overlayOpacitySlider.value)

    def onLesionClicked(self, row, column=0):
        if self.logic.result:
            self.logic.result.centre_on_lesion(row)

    def onRefine(self):
        if self.logic.result:
            self.logic.result.open_in_segment_editor()

    def onKeep(self):
        self.logic.keepResult()
        self.log("Kept: the next result is added beside this one.")
        self.updateResults()

    def onUndo(self):
        """Undo the newest result; when its segmentation was edited since, only after the user agrees."""
        try:
            self.logic.undoResult()
        except EditedResultError as edited:
            if slicer.util.confirmOkCancelDisplay(f"{edited} Undo anyway?", windowTitle="Undo last result"):
                self.logic.undoResult(discardEdits=True)
        except UserError as error:
            slicer.util.errorDisplay(str(error), windowTitle="Undo last result")
        self.updateResults(resetSlider=True)
