"""Undo and successive results on real MRML: the scene exactly as before an import, edits protected, a new prompt
replacing the last result unless kept, newest first."""

import numpy as np
import pytest
import slicer
from ZeroShotDiffusionSegLib.errors import UserError
from ZeroShotDiffusionSegLib.slicer.importer import EditedResultError

from scene_builders import (ANATOMY, SHAPE, expected_labels, labelmap_on_volume_voxels, oblique_volume,
                            segment_in_volume_grid, world_voxels)
from stub_runner import StubRunner
from test_result_import import existing_segmentation, names, new_logic, start

DISPLAY = ("Visibility", "Visibility3D", "Visibility2DFill", "Visibility2DOutline", "Opacity3D", "Opacity2DFill",
           "Opacity2DOutline")


def finish(logic):
    events = logic.poll() + logic.poll()
    done = [e for e in events if e.kind == "done"]
    assert len(done) == 1
    return logic.loadResult(done[0].files)


def logic_with(runner):
    """A Logic whose parameter node is already in the scene (it is made before any import, on the first start)."""
    logic = new_logic(runner)
    logic.getParameterNode()
    return logic


def run(logic, volume, segmentation=None, prompt="liver tumor", **parameters):
    for name, value in parameters.items():
        setattr(logic.getParameterNode(), name, value)
    start(logic, volume, segmentation, prompt)
    return finish(logic)


def scene_nodes():
    """(id, class, name) of every node but the colour tables, which the colour logic adds on demand."""
    nodes = slicer.mrmlScene.GetNodes()
    return sorted((n.GetID(), n.GetClassName(), n.GetName()) for n in (nodes.GetItemAsObject(i) for i in
                  range(nodes.GetNumberOfItems())) if not n.IsA("vtkMRMLColorNode"))


def slice_layers():
    nodes = slicer.mrmlScene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return sorted((c.GetID(), c.GetBackgroundVolumeID(), c.GetForegroundVolumeID(), round(c.GetForegroundOpacity(), 6))
                  for c in (nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())))


def segmentation_state(node, volume):
    """Everything undo must put back: segments (ids, names, colours, voxels), display, reference, geometry."""
    segmentation, display = node.GetSegmentation(), node.GetDisplayNode()
    segments = []
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        shown = {p: getattr(display, "GetSegment" + p)(segment_id) for p in DISPLAY} if display else {}
        voxels = np.round(world_voxels(node, segment_id), 4)  # read from the segment itself: adds no node
        segments.append((segment_id, segment.GetName(), tuple(segment.GetColor()), shown, voxels.tobytes()))
    geometry = segmentation.GetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    return segments, node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()), geometry, \
        segmentation.GetSourceRepresentationName()


def users_scene():
    """A volume shown with another volume as foreground at 0.25, and a segmentation of the user's whose segment is
    hidden in 3-D, at opacity 0.3, outlined only."""
    volume, prior = oblique_volume(), oblique_volume("prior")
    slicer.util.setSliceViewerLayers(background=volume, foreground=prior, foregroundOpacity=0.25)
    node = existing_segmentation(volume)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetSegmentVisibility3D("kept", False)
    display.SetSegmentOpacity2DFill("kept", 0.3)
    display.SetSegmentVisibility2DFill("kept", False)
    return volume, node


@pytest.mark.parametrize("healthy", [False, True], ids=["plain", "pseudo-healthy"])
def test_undo_restores_the_scene_exactly(healthy):
    volume, node = users_scene()
    logic = logic_with(StubRunner(healthy=healthy))
    before = (scene_nodes(), slice_layers(), segmentation_state(node, volume))
    result = run(logic, volume, node, pseudoHealthy=healthy)
    added = {name for _, _, name in scene_nodes()} - {name for _, _, name in before[0]}
    assert {"CT score"} | ({"CT residual", "CT pseudo-healthy"} if healthy else set()) <= added
    assert node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()) == volume.GetID()
    assert slice_layers() != before[1]
    result.undo()
    after = scene_nodes()
    assert after == before[0], f"left behind: {set(after) - set(before[0])}; removed: {set(before[0]) - set(after)}"
    assert slice_layers() == before[1]
    assert segmentation_state(node, volume) == before[2]
    assert logic.results == [] and logic.result is None


def test_undo_of_a_new_segmentation_removes_the_reference_it_set():
    volume = oblique_volume()
    logic = new_logic(StubRunner())
    result = run(logic, volume)
    node = logic.getParameterNode().outputSegmentation
    result.undo()
    assert node.GetSegmentation().GetNumberOfSegments() == 0
    assert node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()) is None
    assert not node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())


def paint(node, segment_id, volume, region):
    """What a Segment Editor stroke does: the painted voxels merged into the segment's labelmap."""
    mask = np.zeros(SHAPE, np.uint8)
    mask[region] = 1
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(labelmap_on_volume_voxels(mask, volume, node), node, segment_id,
                                            logic.MODE_MERGE_MAX)


@pytest.mark.parametrize("edit", ["add", "rename", "paint"])
def test_undo_refuses_after_edits_unless_told_to_discard_them(edit):
    volume, node = users_scene()
    logic = logic_with(StubRunner())
    before = (scene_nodes(), slice_layers(), segmentation_state(node, volume))
    result = run(logic, volume, node)
    segmentation = node.GetSegmentation()
    if edit == "add":
        segmentation.AddEmptySegment("note", "my note")
    elif edit == "rename":
        segmentation.GetSegment(result.segment_ids[0]).SetName("confirmed lesion")
    else:
        paint(node, "kept", volume, (slice(0, 1), slice(0, 5), slice(0, 5)))
    edited = (names(node), segmentation_state(node, volume))
    with pytest.raises(EditedResultError) as refused:
        logic.undoResult()
    message = str(refused.value)
    assert "\n" not in message and {"add": "segment 'my note' added", "rename": "renamed to 'confirmed lesion'",
                                    "paint": "voxels painted or erased"}[edit] in message
    assert (names(node), segmentation_state(node, volume)) == edited, "a refused undo changed the scene"
    logic.undoResult(discardEdits=True)
    assert (scene_nodes(), slice_layers(), segmentation_state(node, volume)) == before


def test_the_panel_asks_before_undoing_an_edited_result(monkeypatch):
    from test_pseudo_healthy import panel_view

    volume, node = users_scene()
    logic = new_logic(StubRunner())
    view = panel_view(logic)
    result = run(logic, volume, node)
    node.GetSegmentation().AddEmptySegment("note", "my note")
    asked = []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **kw: asked.append(text) or False)
    view.onUndo()
    assert len(asked) == 1 and "segment 'my note' added" in asked[0] and asked[0].endswith("Undo anyway?")
    assert logic.result is result and "my note" in names(node)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **kw: True)
    view.onUndo()
    assert logic.result is None and names(node) == ["kept"]


def test_a_new_prompt_replaces_the_previous_result_and_undo_goes_back_before_both():
    volume, node = users_scene()
    logic = logic_with(StubRunner())
    before = (scene_nodes(), slice_layers(), segmentation_state(node, volume))
    first = run(logic, volume, node, prompt="liver tumor")
    second = run(logic, volume, node, prompt="kidney tumor")  # only the prompt changed: served from the cache
    assert len(logic.runner.rescored) == 1
    assert names(node) == ["kept", "kidney tumor 1", "kidney tumor 2"], "the re-prompt added a second set"
    assert [n for _, _, n in scene_nodes() if n.startswith("CT score")] == ["CT score"]
    assert logic.results == [second] and logic.replaced is first and not first.in_scene
    third = run(logic, volume, node, prompt="kidney tumor", klThreshold=0.9)  # a new pass, same volume: replaces too
    assert len(logic.runner.requests) == 2 and logic.results == [third]
    assert names(node) == ["kept", "kidney tumor 1", "kidney tumor 2"]
    third.undo()
    assert (scene_nodes(), slice_layers(), segmentation_state(node, volume)) == before


def test_a_kept_result_stays_the_next_gets_distinct_names_and_undo_goes_newest_first():
    volume, node = users_scene()
    logic = logic_with(StubRunner())
    before = (scene_nodes(), slice_layers(), segmentation_state(node, volume))
    first = run(logic, volume, node, prompt="liver tumor")
    after_first = (scene_nodes(), slice_layers(), segmentation_state(node, volume))
    logic.keepResult()
    second = run(logic, volume, node, prompt="liver tumor")
    assert names(node) == ["kept", "liver tumor 1", "liver tumor 2", "liver tumor 3", "liver tumor 4"]
    assert sorted(n for _, _, n in scene_nodes() if n.startswith("CT score")) == ["CT score", "CT score 2"]
    assert second.score_node.GetName() == "CT score 2" and logic.results == [first, second]
    with pytest.raises(UserError, match="newer result"):
        first.undo()
    assert logic.results == [first, second]
    logic.undoResult()
    assert (scene_nodes(), slice_layers(), segmentation_state(node, volume)) == after_first
    logic.undoResult()
    assert (scene_nodes(), slice_layers(), segmentation_state(node, volume)) == before


def test_an_edited_previous_result_is_kept_not_replaced():
    volume, node = users_scene()
    logic = new_logic(StubRunner())
    first = run(logic, volume, node, prompt="liver tumor")
    node.GetSegmentation().GetSegment(first.segment_ids[1]).SetName("liver tumor 2 (checked)")
    run(logic, volume, node, prompt="kidney tumor")
    assert names(node) == ["kept", "liver tumor 1", "liver tumor 2 (checked)", "kidney tumor 1", "kidney tumor 2"]
    assert logic.replaced is None and len(logic.results) == 2


def test_a_result_for_another_volume_or_segmentation_is_added_beside():
    volume, other = oblique_volume(), oblique_volume("MR")
    logic = new_logic(StubRunner())
    first = run(logic, volume, prompt="liver tumor")
    second = run(logic, other, logic.getParameterNode().outputSegmentation, prompt="liver tumor")
    assert first.in_scene and second.in_scene and logic.results == [first, second]
    assert (first.score_node.GetName(), second.score_node.GetName()) == ("CT score", "MR score")


def test_300_lesions_import_each_on_its_voxel_and_undo():
    """300 one-voxel lesions apart from each other on the oblique volume: a segment on each voxel, undo."""
    volume, node = users_scene()
    before = segmentation_state(node, volume)
    labels, outside = np.zeros(SHAPE, np.uint16), np.ones(SHAPE, bool)
    outside[ANATOMY] = False  # the user's segment's voxels stay apart
    places = [p for p in np.arange(0, labels.size, 73) if outside.flat[p]][:300]  # 73 = 1 row + 25: never neighbours
    labels.flat[places] = np.arange(1, 301)
    logic = new_logic(StubRunner(labels=labels, score=(labels > 0).astype(np.float32)))
    result = run(logic, volume, node)
    assert len(result.segment_ids) == 300
    found = np.zeros(SHAPE, np.int32)
    for segment_id in result.segment_ids:
        found += segment_in_volume_grid(node, segment_id, volume) > 0
    assert np.array_equal(found, (labels > 0).astype(np.int32)), "a lesion voxel missed, doubled or moved"
    result.undo()
    assert segmentation_state(node, volume) == before


def test_a_segmentation_with_a_reference_geometry_of_its_own_is_imported_on_it_and_keeps_it(tmp_path):
    """As loaded from a .seg.nrrd: a reference geometry (a padded lattice of the volume's), no reference node."""
    volume = oblique_volume()
    node = loaded_segmentation(volume, tmp_path, shift_voxels=(-3, -2, -1), extra=(6, 5, 4))
    parameter = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    geometry = node.GetSegmentation().GetConversionParameter(parameter)
    assert geometry and node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()) is None
    logic = new_logic(StubRunner())
    result = run(logic, volume, node)
    assert node.GetSegmentation().GetConversionParameter(parameter) == geometry, "the loaded geometry was overwritten"
    assert node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()) is None
    labels = expected_labels()
    for value, segment_id in enumerate(result.segment_ids, start=1):
        assert np.array_equal(segment_in_volume_grid(node, segment_id, volume) > 0, labels == value)
    result.undo()
    assert node.GetSegmentation().GetConversionParameter(parameter) == geometry
    assert node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()) is None
    assert names(node) == ["loaded"]


@pytest.mark.parametrize("mismatch", ["half a voxel", "other spacing"])
def test_a_segmentation_whose_geometry_the_input_does_not_lie_on_is_refused_before_the_run(tmp_path, mismatch):
    volume = oblique_volume()
    node = loaded_segmentation(volume, tmp_path, shift_voxels=(0.5, 0, 0) if mismatch == "half a voxel" else (0, 0, 0),
                               spacing_factor=1.0 if mismatch == "half a voxel" else 2.0)
    parameter = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    geometry, before = node.GetSegmentation().GetConversionParameter(parameter), scene_nodes()
    runner = StubRunner()
    with pytest.raises(UserError, match=r"has its own geometry, whose voxels do not line up") as refused:
        start(new_logic(runner), volume, node)
    assert "\n" not in str(refused.value) and runner.requests == [] and scene_nodes() == before
    assert node.GetSegmentation().GetConversionParameter(parameter) == geometry


def loaded_segmentation(volume, folder, shift_voxels=(0, 0, 0), extra=(0, 0, 0), spacing_factor=1.0):
    """A segmentation written to a .seg.nrrd and read back (so no reference node), whose reference geometry is the
    volume's lattice shifted by ``shift_voxels``, ``extra`` voxels larger, spacing times ``spacing_factor``."""
    import vtk

    reference = slicer.vtkOrientedImageData()
    ijk_to_ras, step = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    for axis in range(3):
        step.SetElement(axis, axis, spacing_factor)
        step.SetElement(axis, 3, shift_voxels[axis])
    matrix = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Multiply4x4(ijk_to_ras, step, matrix)
    reference.SetImageToWorldMatrix(matrix)
    reference.SetExtent(0, SHAPE[2] + extra[0] - 1, 0, SHAPE[1] + extra[1] - 1, 0, SHAPE[0] + extra[2] - 1)
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "to save")
    segmentation = node.GetSegmentation()
    segmentation.SetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
                                        slicer.vtkSegmentationConverter.SerializeImageGeometry(reference))
    mask = np.zeros(SHAPE, np.uint8)
    mask[ANATOMY] = 1
    segment = slicer.vtkSegment()
    segment.SetName("loaded")
    segment.AddRepresentation("Binary labelmap", labelmap_on_volume_voxels(mask, volume, node))
    segmentation.AddSegment(segment, "loaded")
    path = str(folder / "saved.seg.nrrd")
    writer = slicer.vtkMRMLSegmentationStorageNode()
    writer.SetFileName(path)
    assert writer.WriteData(node)
    slicer.mrmlScene.RemoveNode(node)
    loaded = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded from file")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(path)
    assert reader.ReadData(loaded)
    return loaded
