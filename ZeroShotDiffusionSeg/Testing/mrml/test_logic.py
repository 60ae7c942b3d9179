"""The Logic with a real parameter node (vtkMRMLScriptedModuleNode through the real parameterNodeWrapper)."""

import numpy as np
import pytest
import slicer
from ZeroShotDiffusionSegLib.errors import UserError

from scene_builders import expected_labels, oblique_volume, segment_in_volume_grid
from stub_runner import StubRunner


@pytest.fixture
def logic():
    import ZeroShotDiffusionSeg

    runner = StubRunner()
    module_logic = ZeroShotDiffusionSeg.ZeroShotDiffusionSegLogic(runnerFactory=lambda settings: runner)
    module_logic.stub = runner
    yield module_logic
    module_logic.shutdown()


def test_parameter_node_is_a_real_scripted_module_node_with_the_panel_defaults(logic):
    parameters = logic.getParameterNode()
    node = parameters.parameterNode
    assert node.IsA("vtkMRMLScriptedModuleNode") and node.GetScene() is slicer.mrmlScene
    assert node.GetAttribute("ModuleName") == "ZeroShotDiffusionSeg"
    settings = logic.settingsFrom(parameters)
    assert (settings.mode, settings.device, settings.axis, settings.kl_threshold) == ("prompt", "auto", "auto", 1.1)
    volume = oblique_volume()
    parameters.inputVolume = volume
    assert logic.getParameterNode().inputVolume is volume  # stored in the scene, read back through a new wrapper


def test_start_progress_import_threshold_undo_cancel(logic):
    parameters = logic.getParameterNode()
    parameters.inputVolume, parameters.prompt = oblique_volume(), "brain tumor"
    job_id = logic.start(parameters, logic.settingsFrom(parameters))
    assert logic.busy and logic.jobId == job_id
    segmentation = logic.getParameterNode().outputSegmentation
    assert segmentation is not None and segmentation.GetName() == "CT tumor"
    assert logic.stub.requests[0].prompt == "brain tumor"
    progress = logic.poll()
    assert [(e.kind, e.fraction) for e in progress] == [("progress", 0.5)]
    done = logic.poll()
    assert not logic.busy and done[0].job_id == job_id
    result = logic.loadResult(done[0].files)
    assert result is logic.result and len(result.view.lesions) == 2
    ids = result.segment_ids
    assert np.array_equal(segment_in_volume_grid(segmentation, ids[1], parameters.inputVolume) > 0, expected_labels() == 2)
    result.apply_threshold(0.7)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
    result.undo()
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0
    logic.start(parameters, logic.settingsFrom(parameters))  # same engine settings: the warm runner again
    assert logic.busy and len(logic.stub.requests) == 2
    logic.cancel()
    assert not logic.busy and [e.kind for e in logic.poll()] == ["cancelled"]


def test_wrong_inputs_are_refused_before_the_runner_starts(logic):
    parameters = logic.getParameterNode()
    parameters.prompt = "lesion"
    with pytest.raises(UserError, match="Choose an input volume"):
        logic.start(parameters, logic.settingsFrom(parameters))
    parameters.inputVolume = oblique_volume()
    parameters.prompt = " "
    with pytest.raises(UserError):
        logic.start(parameters, logic.settingsFrom(parameters))
    assert logic.stub.requests == [] and logic.getParameterNode().outputSegmentation is None


def _run_to_result(logic, parameters):
    job_id = logic.start(parameters, logic.settingsFrom(parameters))
    events = logic.poll() + logic.poll()
    done = [event for event in events if event.kind == "done"]
    assert done and done[0].job_id == job_id
    logic.loadResult(done[0].files)
    return job_id, done[0].files


def test_a_new_prompt_on_the_same_volume_is_rescored_from_the_cache(logic):
    parameters = logic.getParameterNode()
    parameters.inputVolume, parameters.prompt = oblique_volume(), "brain tumor"
    first_job, first_files = _run_to_result(logic, parameters)
    assert logic.cacheNote(first_files) is None and logic.stub.rescored == []
    assert logic.stub.requests[0].normal_prompt is None  # none typed: the engine derives it from the prompt's organ

    parameters.prompt = "liver tumor"  # only the prompt changed: no export, no new run
    second_job, files = _run_to_result(logic, parameters)
    assert len(logic.stub.requests) == 1 and len(logic.stub.rescored) == 1
    previous, request = logic.stub.rescored[0]
    assert previous == first_job and second_job != first_job
    assert (request.prompt, request.normal_prompt) == ("liver tumor", None)
    assert logic.cacheNote(files) == "re-scored from cache in 0.3 s"
    assert len(logic.result.view.lesions) == 2  # the re-scored result is in the scene like a run's

    parameters.klThreshold = 0.9  # a setting of the pass changed: a full run again
    _run_to_result(logic, parameters)
    assert len(logic.stub.requests) == 2 and len(logic.stub.rescored) == 1

    parameters.prompt = "kidney tumor"
    _run_to_result(logic, parameters)
    assert len(logic.stub.rescored) == 2
    slicer.util.updateVolumeFromArray(parameters.inputVolume, slicer.util.arrayFromVolume(parameters.inputVolume) + 1)
    parameters.prompt = "lung nodule"  # the voxels changed since the export: exported and run again
    _run_to_result(logic, parameters)
    assert len(logic.stub.requests) == 3 and len(logic.stub.rescored) == 2
