"""The panel's Logic: starts runs, polls them, imports results. No widgets and no ``self.ui``.

The module file subclasses ``ZeroShotDiffusionSegLogic`` only to wrap its parameter node; scripts and
tests use it directly. Every method takes the parameter node (or anything with its attribute names),
so a run can be driven without the panel. Collaborators are injected: ``runnerFactory(settings) ->
Runner`` (tests pass a stub), ``importerFactory(volume, segmentation, request)`` (the object
whose ``load(files)`` brings a finished job into the scene). A run is: checks, ``runnerFor``,
``exportVolume``, ``submit``; another kind of job can reuse those steps with its own importer.

A prompt run whose only change from the last loaded one is the prompt (same volume, voxels unchanged,
same engine and settings) is sent as ``runner.rescore(lastJob, ...)``: the worker scores it from the
query cache of that volume's pass instead of running the model again.

Successive results: a new result on the same volume and segmentation *replaces* the last one (its
segments and volumes go, undo goes back to before it), as a new prompt replaces the last in a search
box, unless the user kept that one (``keepResult``) or edited its segmentation since; then the new one
comes beside it, its volumes named '<volume> score 2' and so on. ``results`` lists the results in the
scene, oldest first; ``undoResult`` undoes the newest (an older one refuses while newer ones remain).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from ..errors import UserError
from . import mrml, panel, setup_state
from .importer import ResultImporter, one_line

MODULE_DIR = str(Path(__file__).resolve().parents[2])  # the folder of ZeroShotDiffusionSeg.py and the library
SETTINGS_PREFIX = "ZeroShotDiffusionSeg/"


def pythonExecutable():
    """Slicer's own Python for the worker, so it sees the packages the setup installed."""
    return shutil.which("PythonSlicer") or sys.executable


class ZeroShotDiffusionSegLogic(ScriptedLoadableModuleLogic):
    """Starts runs and imports results. ``runnerFactory(settings) -> Runner`` is injectable (tests pass a stub)."""

    def __init__(self, runnerFactory=None, importerFactory=ResultImporter):
        ScriptedLoadableModuleLogic.__init__(self)
        self.runnerFactory = runnerFactory or (lambda s: panel.create_runner(s, pythonExecutable(), [MODULE_DIR]))
        self.importerFactory = importerFactory
        self.runner, self.runnerKey, self.pending, self.workDir, self.jobId = (None,) * 5
        self.submitted = self.lastRun = None  # (job handle, runKey, (prompt, normal prompt)) of a prompt run
        self.results = []  # ResultImporters in the scene, oldest first
        self.replaced = None  # the result the last load replaced, if it did
        self.uploadConsent = set()  # server URLs the user agreed to send volumes to, this session

    @property
    def busy(self):
        return self.runner is not None and self.runner.busy

    @property
    def result(self):
        """The newest result in the scene (what the panel's Results section shows), or None."""
        return self.results[-1] if self.results else None

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
            per_lesion=p.perLesion, pseudo_healthy=p.pseudoHealthy, device=panel.option_value(panel.DEVICES, p.device),
            model=p.model, server_url=p.serverUrl, server_token=token)

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

    def start(self, p, settings):
        """Check the inputs, export the volume and start a segmentation run; returns the job id."""
        request = panel.build_request(settings)
        # The request, not the panel: a point list left selected in prompt mode carries no seeds.
        mrml.check_input_volume(p.inputVolume, bool(request.seeds or request.roi_physical))
        mrml.check_output_segmentation(p.outputSegmentation)
        if p.outputSegmentation:
            mrml.ijk_to_segmentation_matrix(p.inputVolume, p.outputSegmentation)  # refuses non-linear transforms now
            mrml.check_segmentation_geometry(p.inputVolume, p.outputSegmentation)
        runner = self.runnerFor(settings)
        rescore = self.canRescore(p.inputVolume, runner, request)
        inputPath = None if rescore else self.exportVolume(p.inputVolume)
        if not p.outputSegmentation:
            p.outputSegmentation = self.newOutputSegmentation(p.inputVolume)
        importer = self.importerFactory(p.inputVolume, p.outputSegmentation, request)
        if rescore:
            return self.submitRescore(runner, request, importer)
        return self.submit(runner, inputPath, request, importer)

    def runRecord(self, job, volume, request):
        """(job, what a re-score must share with it: volume, voxels' state, every field of the pass; what it may
        change: the prompts and the pseudo-healthy refinement, which the worker runs after the cached pass)."""
        key = (volume.GetID(), volume.GetImageData().GetMTime() if volume.GetImageData() else None,
               dataclasses.replace(request, prompt=None, normal_prompt=None, pseudo_healthy=None))
        return job, key, (request.prompt, request.normal_prompt, request.pseudo_healthy)

    def canRescore(self, volume, runner, request):
        """True when ``request`` differs from the last loaded run only by its prompts or pseudo-healthy refinement
        (and the runner can re-score)."""
        if request.mode != "prompt" or self.lastRun is None or not hasattr(runner, "rescore") or not self.workDir:
            return False
        job, key, changeable = self.lastRun
        _, newKey, newChangeable = self.runRecord(None, volume, request)
        return key == newKey and changeable != newChangeable and os.path.exists(job.input_path)

    def submitRescore(self, runner, request, importer):
        """Score ``request`` on the last run's volume from the worker's cache; ``loadResult`` as for a run."""
        self.pending, previous = importer, self.lastRun[0]
        outDir = os.path.join(self.workDir, f"result-{len(os.listdir(self.workDir))}")
        job = runner.rescore(previous, outDir, request)
        self.submitted = self.runRecord(job, importer.volume, request)
        self.jobId = job.job_id
        return self.jobId

    def newOutputSegmentation(self, volume):
        """A segmentation for the result, under the volume's transform like the volume's other derived data."""
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volume.GetName()} tumor")
        node.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
        return node

    def runnerFor(self, settings):
        """The runner for these engine settings: the warm one when they did not change."""
        key = panel.runner_key(settings)
        if self.runner is None or key != self.runnerKey:
            self.shutdown()
            self.runner, self.runnerKey = self.runnerFactory(settings), key
        return self.runner

    def exportVolume(self, volume, name="input.nrrd"):
        """Write ``volume`` (its local frame, no transform hardened) into a fresh work folder; returns the path."""
        self.removeWorkDir()
        self.workDir = tempfile.mkdtemp(prefix="ZeroShotDiffusionSeg-", dir=slicer.app.temporaryPath)  # no Qt needed
        path = os.path.join(self.workDir, name)
        slicer.util.exportNode(volume, path)
        return path

    def submit(self, runner, inputPath, request, importer):
        """Start the job; ``importer.load(files)`` runs when it is done (``loadResult``)."""
        self.pending = importer
        job = runner.start(inputPath, os.path.join(self.workDir, "result"), request)
        self.submitted = self.runRecord(job, importer.volume, request) if hasattr(importer, "volume") else None
        self.jobId = job.job_id
        return self.jobId

    def poll(self):
        return self.runner.poll() if self.runner else []

    def loadResult(self, files):
        """Bring the finished job into the scene, replacing the last result where it should (module docstring).
        On any error the scene is left as it was and the error is one UserError line."""
        self.lastRun, importer, previous = None, self.pending, self.result
        replace = (previous is not None and not previous.kept and previous.volume is importer.volume
                   and previous.segmentation_node is importer.segmentation_node and not previous.changes_since_import())
        try:
            importer.load(files, replacing=previous if replace else None)
        except UserError:
            raise
        except Exception as error:  # raised before the scene changed (e.g. a file list without a path)
            raise UserError(f"The result could not be loaded ({one_line(error)}); the scene is as it was.") from error
        importer.history = self.results
        self.results.append(importer)
        self.replaced = previous if replace else None
        self.lastRun = self.submitted  # only a loaded result can be re-scored
        return importer

    def keepResult(self):
        """Keep the newest result: the next one is added beside it instead of replacing it."""
        if self.result:
            self.result.kept = True

    def undoResult(self, discardEdits=False):
        """Undo the newest result (``ResultImporter.undo``); the one before it becomes the newest."""
        if self.result:
            self.result.undo(discardEdits=discardEdits)

    def cacheNote(self, files):
        """'re-scored from cache in 0.4 s' when the engine answered from its query cache (provenance), else None.
        A pseudo-healthy run repaints on every re-prompt: the note says so, its seconds include the repaint."""
        try:
            with open(files["provenance"], encoding="utf-8") as handle:
                runtime = json.load(handle)["runtime"]
            if runtime.get("query_cache") != "memory hit":
                return None
            seconds = sum(v for stage, v in runtime["timings_s"].items() if stage != "segment_per_slice")
            repainted = " and repainted" if "pseudo_healthy" in runtime["timings_s"] else ""
        except (KeyError, TypeError, OSError, ValueError, AttributeError):
            return None
        return f"re-scored from cache{repainted} in {seconds:.1f} s"

    def cancel(self):
        if self.runner:
            self.runner.cancel()

    def removeWorkDir(self):
        self.lastRun = None  # the last run's input goes with the folder
        if self.workDir:
            shutil.rmtree(self.workDir, ignore_errors=True)
            self.workDir = None

    def shutdown(self):
        if self.runner:
            self.runner.shutdown()
        self.runner, self.runnerKey = None, None
        self.removeWorkDir()

