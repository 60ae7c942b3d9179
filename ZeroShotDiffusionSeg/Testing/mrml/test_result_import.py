"""Importing a finished run into real MRML: geometry under transforms, names, terminology, threshold, undo, refusals.

Segments are checked voxel by voxel after exporting them back with the Segmentations logic onto the input
volume, and in world space from the segmentation's own labelmap (independently of that export).
"""

import numpy as np
import pytest
import slicer
import vtk
from ZeroShotDiffusionSegLib.errors import UserError

from scene_builders import (ANATOMY, LESION_1, SHAPE, expected_labels, labelmap_on_volume_voxels, linear_transform,
                            oblique_volume, segment_in_volume_grid, world_voxel_centres, world_voxels)
from stub_runner import StubRunner


def new_logic(runner):
    import ZeroShotDiffusionSeg

    return ZeroShotDiffusionSeg.ZeroShotDiffusionSegLogic(runnerFactory=lambda settings: runner)


def start(logic, volume, segmentation=None, prompt="liver tumor"):
    parameters = logic.getParameterNode()
    parameters.inputVolume, parameters.prompt, parameters.outputSegmentation = volume, prompt, segmentation
    logic.start(parameters, logic.settingsFrom(parameters))
    return parameters


def run(volume, segmentation=None, runner=None, prompt="liver tumor"):
    logic = new_logic(runner or StubRunner())
    parameters = start(logic, volume, segmentation, prompt)
    assert [e.kind for e in logic.poll()] == ["progress"]
    done = logic.poll()
    assert [e.kind for e in done] == ["done"]
    logic.loadResult(done[0].files)
    return logic, parameters.outputSegmentation


def names(segmentation_node, ids=None):
    segmentation = segmentation_node.GetSegmentation()
    ids = segmentation.GetSegmentIDs() if ids is None else ids
    return [segmentation.GetSegment(i).GetName() for i in ids]


def terminology(segment):
    value = vtk.mutable("")
    assert segment.GetTag(segment.GetTerminologyEntryTagName(), value)
    return str(value)


def existing_segmentation(volume, name="kept", transform=None):
    """A segmentation (under ``transform``) holding one segment exactly on ANATOMY voxels of ``volume``."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "existing")
    node.SetAndObserveTransformNodeID(transform.GetID() if transform else None)
    mask = np.zeros(SHAPE, np.uint8)
    mask[ANATOMY] = 1
    segment = slicer.vtkSegment()
    segment.SetName(name)
    segment.AddRepresentation("Binary labelmap", labelmap_on_volume_voxels(mask, volume, node))
    node.GetSegmentation().AddSegment(segment, "kept")
    return node


def scene_state():
    nodes = slicer.mrmlScene.GetNodes()
    return sorted(nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems()))


def test_multi_lesion_result_into_a_new_segmentation_is_voxel_exact():
    volume = oblique_volume()
    logic, node = run(volume)
    ids = logic.result.segment_ids
    assert names(node) == ["liver tumor 1", "liver tumor 2"]
    labels = expected_labels()
    for value, segment_id in enumerate(ids, start=1):
        exported = segment_in_volume_grid(node, segment_id, volume)
        assert exported.shape == SHAPE
        assert int(((exported > 0) != (labels == value)).sum()) == 0
    entry = terminology(node.GetSegmentation().GetSegment(ids[0]))
    assert "SCT^108369006^Neoplasm" in entry and "SCT^10200004^Liver" in entry
    assert node.GetTransformNodeID() is None
    assert node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()) == volume.GetID()


def test_names_stay_unique_and_other_segments_are_kept():
    volume = oblique_volume()
    node = existing_segmentation(volume, name="liver tumor 1")
    before = segment_in_volume_grid(node, "kept", volume)
    logic, _ = run(volume, node)
    assert names(node) == ["liver tumor 1", "liver tumor 2", "liver tumor 3"]
    assert np.array_equal(segment_in_volume_grid(node, "kept", volume), before) and int(before.sum()) == 400


@pytest.mark.parametrize("case", ["none", "volume", "segmentation", "both (same transform)"])
def test_transforms_keep_old_segments_and_put_new_ones_on_the_input_voxels(case):
    volume, moved = oblique_volume(), linear_transform()
    if case in ("volume", "both (same transform)"):
        volume.SetAndObserveTransformNodeID(moved.GetID())
    node = existing_segmentation(volume, transform=moved if case in ("segmentation", "both (same transform)") else None)
    transform_before, kept_world = node.GetTransformNodeID(), world_voxels(node, "kept")
    kept_export = segment_in_volume_grid(node, "kept", volume)
    assert int(kept_export.sum()) == 400
    logic, _ = run(volume, node)
    assert node.GetTransformNodeID() == transform_before, "the segmentation was moved"
    assert np.array_equal(world_voxels(node, "kept"), kept_world)
    assert np.array_equal(segment_in_volume_grid(node, "kept", volume), kept_export)
    labels = expected_labels()
    for value, segment_id in enumerate(logic.result.segment_ids, start=1):
        assert int(((segment_in_volume_grid(node, segment_id, volume) > 0) != (labels == value)).sum()) == 0
    logic.result.undo()
    assert names(node) == ["kept"] and node.GetTransformNodeID() == transform_before
    assert np.array_equal(world_voxels(node, "kept"), kept_world)


def sorted_points(points):
    return points[np.lexsort(np.round(points, 3).T)]


def test_different_transforms_on_volume_and_segmentation_land_in_world_space():
    """Checked from the segment's own labelmap (Slicer's export is not exact for this case, see the README)."""
    volume = oblique_volume()
    volume.SetAndObserveTransformNodeID(linear_transform("on volume").GetID())
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    node.SetAndObserveTransformNodeID(linear_transform("on segmentation", angle=-30, translation=(1, 2, 3)).GetID())
    logic, _ = run(volume, node)
    for value, segment_id in enumerate(logic.result.segment_ids, start=1):
        got, expected = world_voxels(node, segment_id), world_voxel_centres(volume, expected_labels() == value)
        assert got.shape == expected.shape
        assert np.abs(sorted_points(got) - sorted_points(expected)).max() < 1e-6


def closed_surface_segmentation():
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "from STL")
    sphere = vtk.vtkSphereSource()
    sphere.SetRadius(10)
    sphere.Update()
    segment = slicer.vtkSegment()
    segment.SetName("organ")
    segment.AddRepresentation("Closed surface", sphere.GetOutput())
    node.GetSegmentation().SetSourceRepresentationName("Closed surface")
    node.GetSegmentation().AddSegment(segment, "organ")
    return node


def test_closed_surface_segmentation_is_refused_before_the_run():
    volume, node, runner = oblique_volume(), closed_surface_segmentation(), StubRunner()
    before = scene_state()
    with pytest.raises(UserError, match="Closed surface"):
        start(new_logic(runner), volume, node)
    assert runner.requests == [] and scene_state() == before and names(node) == ["organ"]


def test_closed_surface_set_during_the_run_is_refused_with_the_scene_unchanged():
    volume, node = oblique_volume(), existing_segmentation(oblique_volume("other"))
    logic = new_logic(StubRunner())
    start(logic, volume, node)
    node.GetSegmentation().DeepCopy(closed_surface_segmentation().GetSegmentation())
    before = scene_state()
    logic.poll()
    with pytest.raises(UserError, match="Closed surface"):
        logic.loadResult(logic.poll()[0].files)
    assert scene_state() == before and names(node) == ["organ"]
    assert node.GetSegmentation().GetSourceRepresentationName() == "Closed surface"


def test_empty_segmentation_with_a_closed_surface_source_becomes_a_labelmap_one():
    volume = oblique_volume()
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    node.GetSegmentation().SetSourceRepresentationName("Closed surface")
    logic, _ = run(volume, node)
    assert node.GetSegmentation().GetSourceRepresentationName() == "Binary labelmap"
    exported = segment_in_volume_grid(node, logic.result.segment_ids[0], volume)
    assert np.array_equal(exported > 0, expected_labels() == 1)


def test_rethreshold_replaces_only_this_runs_segments_and_undo_restores():
    volume = oblique_volume()
    node = existing_segmentation(volume)
    logic, _ = run(volume, node)
    first_ids = logic.result.segment_ids
    logic.result.apply_threshold(0.7)
    assert names(node) == ["kept", "liver tumor"] and not set(first_ids) & set(logic.result.segment_ids)
    assert np.array_equal(segment_in_volume_grid(node, logic.result.segment_ids[0], volume) > 0, expected_labels() == 1)
    logic.result.undo()
    assert names(node) == ["kept"] and int(segment_in_volume_grid(node, "kept", volume).sum()) == 400


def test_score_overlay_is_on_the_input_grid_under_its_transform():
    volume = oblique_volume()
    volume.SetAndObserveTransformNodeID(linear_transform().GetID())
    logic, _ = run(volume)
    score = logic.result.score_node
    a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    score.GetIJKToRASMatrix(a)
    volume.GetIJKToRASMatrix(b)
    assert all(abs(a.GetElement(r, c) - b.GetElement(r, c)) < 1e-9 for r in range(4) for c in range(4))
    assert score.GetTransformNodeID() == volume.GetTransformNodeID()
    values = slicer.util.arrayFromVolume(score)
    assert values.shape == SHAPE and float(values[LESION_1].min()) == pytest.approx(0.9)
    composite = slicer.mrmlScene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    assert all(composite.GetItemAsObject(i).GetForegroundVolumeID() == score.GetID()
               for i in range(composite.GetNumberOfItems()))


def test_lesion_row_centres_the_views_on_the_lesion_in_world_space():
    volume = oblique_volume()
    volume.SetAndObserveTransformNodeID(linear_transform().GetID())
    logic, _ = run(volume)
    logic.result.centre_on_lesion(0)
    expected = world_voxel_centres(volume, expected_labels() == 1).mean(axis=0)
    red = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
    slice_to_ras = red.GetSliceToRAS()
    centre = [slice_to_ras.GetElement(r, 3) for r in range(3)]
    assert np.allclose(centre, expected, atol=0.01)  # lesions.csv rounds centroids to 0.01 mm


def test_a_node_deleted_during_the_run_is_reported_and_nothing_is_added():
    volume = oblique_volume()
    node = existing_segmentation(volume)
    logic = new_logic(StubRunner())
    start(logic, volume, node)
    slicer.mrmlScene.RemoveNode(node)
    before = scene_state()
    logic.poll()
    with pytest.raises(UserError, match="deleted during the run"):
        logic.loadResult(logic.poll()[0].files)
    assert scene_state() == before


def test_a_result_on_another_grid_is_refused_with_nothing_left_behind():
    volume = oblique_volume()
    node = existing_segmentation(volume)
    logic = new_logic(StubRunner(spacing_factor=1.5))
    start(logic, volume, node)
    before = scene_state()
    logic.poll()
    with pytest.raises(UserError, match="different grid"):
        logic.loadResult(logic.poll()[0].files)
    assert scene_state() == before and names(node) == ["kept"]


@pytest.mark.parametrize("healthy", [False, True], ids=["plain", "pseudo-healthy"])
def test_a_failure_half_way_puts_the_scene_back(monkeypatch, healthy):
    """With a pseudo-healthy run's files the pseudo-healthy and residual volumes are in the scene too when the
    last step fails; every node the import added goes."""
    volume = oblique_volume()
    node = existing_segmentation(volume)
    logic = new_logic(StubRunner(healthy=healthy))
    start(logic, volume, node)
    before = scene_state()
    from ZeroShotDiffusionSegLib.slicer import importer

    def fail(self, name, opacity):  # the last step: segments and the result volumes are in the scene by now
        added = {slicer.mrmlScene.GetNodeByID(i).GetName() for i in scene_state() if i not in before}
        assert len(names(node)) == 3 and "CT score" in added
        assert ({"CT residual", "CT pseudo-healthy"} <= added) == healthy
        raise RuntimeError("display failed")

    monkeypatch.setattr(importer.ResultImporter, "show_overlay", fail)
    logic.poll()
    with pytest.raises(UserError, match=r"^The result could not be added to the scene \(display failed\); the scene "
                                        r"is as it was\.$"):
        logic.loadResult(logic.poll()[0].files)
    assert scene_state() == before and names(node) == ["kept"]
    assert not slicer.mrmlScene.GetFirstNodeByName("CT pseudo-healthy")
    assert int(segment_in_volume_grid(node, "kept", volume).sum()) == 400
    assert node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()) is None
