"""A finished run into the scene: segments on the input's voxels, the overlays, threshold and undo.

MRML glue (imports ``slicer``): the decisions (names, colours, terminology, lesion rows) come from
``results.ResultSession``. Two rules hold here:

- Geometry: the result's labels are on the input volume's grid, in the volume's local frame. The
  new segments are written as one labelmap layer whose image-to-segmentation matrix is
  (volume frame -> segmentation frame) x IJKToRAS, so they cover exactly those voxels in world space
  whatever transforms the two nodes are under, and neither node is moved: segments already in the
  segmentation stay where they were. A non-linear transform between the two is refused.
- All or nothing: every check runs before the scene changes; if anything fails after that, the
  segmentation and the scene are put back as they were, and the failure is one ``UserError`` line.
- A segmentation with a reference geometry of its own (e.g. loaded from a .seg.nrrd) keeps it: the result is
  imported when the input's voxels lie on that geometry's lattice, refused otherwise (``mrml``); only a
  segmentation without one gets the input volume as reference.

Undo puts the scene back exactly as it was before the import (``scene_state.SceneSnapshot``): this run's
segments removed (the others, their display properties and the reference untouched), the nodes the import
added removed with their display and storage nodes, the slice views' layers and opacity restored. It
refuses when the segmentation was edited since (``EditedResultError``) unless told to discard the edits,
and when a newer result is still in the scene: results are undone newest first (``history``).

A result can *replace* the previous one (``load(files, replacing=previous)``: a new prompt on the same
volume and segmentation): it is imported first, then the previous one's segments and volumes are removed,
and its undo goes back to the scene before the previous one.

The score map, and after a pseudo-healthy run the residual and the pseudo-healthy volume, become
scalar volumes on the input's grid (same IJKToRAS, same parent transform, same study). The slice
views show the input as background and one of them as foreground (``show_overlay``): the
pseudo-healthy volume has the input's window/level and colours, so its opacity fades between the two.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from ..errors import UserError
from ..volume.outputs import OPTIONAL_OUTPUT_NAMES
from .geometry import geometries_match, geometry_of_sitk_image
from .mrml import check_output_segmentation, check_segmentation_geometry, ijk_to_ras_geometry, ijk_to_segmentation_matrix
from .results import DEFAULT_OPACITY, HEALTHY, RESIDUAL, SCORE, ResultSession, default_overlay, lesion_centre_ras
from .scene_state import (SceneSnapshot, describe_changes, remove_nodes,
                          restore_slice_layers, scene_node_ids, segmentation_fingerprint, unique_node_name)

HEALTHY_OF_ROLE = "pseudoHealthyOf"  # node reference of the pseudo-healthy volume to the input it was computed from
BINARY_LABELMAP = "Binary labelmap"


class EditedResultError(UserError):
    """Undo refused: the segmentation was edited after the result was imported (``undo(discardEdits=True)``)."""


def one_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def read_result_array(files, name, geometry, shape):
    """The array of result file ``name`` (numpy k, j, i) if it lies on ``geometry``/``shape``; UserError otherwise."""
    if name not in files:
        raise UserError(f"The engine's result has no {name} file; nothing was imported. Run the segmentation again.")
    try:
        image = sitk.ReadImage(str(files[name]))
    except RuntimeError:  # missing or not an image: SimpleITK's message is several lines of ITK detail
        raise UserError(f"The engine's {name} file cannot be read ({files[name]}); nothing was imported. "
                        "Run the segmentation again.") from None
    array = sitk.GetArrayFromImage(image)
    if array.shape != tuple(shape) or not geometries_match(geometry, geometry_of_sitk_image(image)):
        raise UserError("The engine returned a result on a different grid than the input; not imported.")
    return array


def labelmap_layer(labels, matrix):
    """A vtkOrientedImageData holding ``labels`` (numpy k, j, i) with image-to-segmentation ``matrix``."""
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    k, j, i = labels.shape
    image.SetDimensions(i, j, k)
    image.AllocateScalars(vtk.VTK_UNSIGNED_SHORT, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = labels.astype(np.uint16).ravel()
    image.SetImageToWorldMatrix(matrix)
    return image


class ResultImporter:
    """One finished run in the scene: its segments, score overlay, lesion table and undo state."""

    def __init__(self, volume, segmentation_node, request):
        self.volume, self.segmentation_node, self.request = volume, segmentation_node, request
        self.session, self.view, self.segment_ids, self.score_node = None, None, [], None
        self._to_segmentation, self.overlays = None, {}  # overlay name (results.OVERLAYS) -> its volume node
        self.kept = False  # the user chose to keep it: a new prompt adds beside it instead of replacing it
        self.history = None  # the results in the scene, oldest first (the Logic's list); undo goes newest first
        self._before, self._expected, self.added_node_ids = None, None, []

    def check(self):
        """Everything that can refuse the import, with the scene untouched; returns the IJK->segmentation matrix."""
        volume, node = self.volume, self.segmentation_node
        if volume.GetScene() is None or node.GetScene() is None:
            raise UserError("The input volume or the output segmentation was deleted during the run.")
        check_output_segmentation(node)
        check_segmentation_geometry(volume, node)
        return ijk_to_segmentation_matrix(volume, node)

    def load(self, files, replacing=None):
        """Read the result files (checking their grid), then create the overlays and the segments; with
        ``replacing`` (the previous result of this volume and segmentation) remove that one's afterwards."""
        to_segmentation = self.check()
        geometry = ijk_to_ras_geometry(self.volume)
        shape = slicer.util.arrayFromVolume(self.volume).shape
        labels = read_result_array(files, "labels", geometry, shape)
        score = read_result_array(files, "score", geometry, shape).astype(np.float32)
        counterfactual = {name: read_result_array(files, name, geometry, shape) for name in OPTIONAL_OUTPUT_NAMES
                          if name in files}  # healthy, residual: written by a pseudo-healthy run
        request = self.request
        session = ResultSession(request.mode, request.prompt, score, labels, geometry,
                                request.params.selection_threshold, not request.binary, request.min_volume_mm3,
                                refined=request.pseudo_healthy is not None)
        now = SceneSnapshot.capture(self.segmentation_node)
        try:
            self._add_to_scene(session, score, counterfactual, to_segmentation, now, replacing)
        except BaseException as error:
            self._roll_back(now)
            if isinstance(error, UserError):
                raise
            raise UserError(f"The result could not be added to the scene ({one_line(error)}); the scene is as it "
                            "was.") from error
        added = [i for i in scene_node_ids() if i not in set(now.node_ids)]
        self._before = now
        if replacing is not None:
            self._before = replacing._before
            replacing.withdraw()
            added = [i for i in replacing.added_node_ids if slicer.mrmlScene.GetNodeByID(i)] + added
        self.added_node_ids = added
        self._expected = segmentation_fingerprint(self.segmentation_node)
        return self

    def _add_to_scene(self, session, score, counterfactual, to_segmentation, now, replacing):
        volume, node = self.volume, self.segmentation_node
        slicer.mrmlScene.SaveStateForUndo()
        replaced_ids = list(replacing.overlays_ids()) if replacing is not None else []
        self.score_node = self._volume_on_input_grid("score", score, replaced_ids)
        self.overlays = {SCORE: self.score_node}
        if "residual" in counterfactual:
            self.overlays[RESIDUAL] = self._volume_on_input_grid("residual", counterfactual["residual"].astype(np.float32),
                                                                 replaced_ids)
        for overlay in self.overlays.values():  # score and residual: maps in 0..1
            style_as_map(overlay)
        if "healthy" in counterfactual:
            self.overlays[HEALTHY] = self._volume_on_input_grid("pseudo-healthy", counterfactual["healthy"], replaced_ids)
            self.overlays[HEALTHY].SetNodeReferenceID(HEALTHY_OF_ROLE, volume.GetID())
            style_like(self.overlays[HEALTHY], volume)
        hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
        study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(volume))
        moved = list(self.overlays.values())
        if node.GetSegmentation().GetNumberOfSegments() == 0:  # a new segmentation: nothing to convert or keep
            node.GetSegmentation().SetSourceRepresentationName(BINARY_LABELMAP)
            moved.append(node)
        for result_node in moved:
            hierarchy.SetItemParent(hierarchy.GetItemByDataNode(result_node), study)
        if not now.reference_id and not now.geometry:  # never overwrite a geometry of the segmentation's own
            node.SetReferenceImageGeometryParameterFromVolumeNode(volume)  # also the reference DICOM SEG needs
        node.CreateDefaultDisplayNodes()
        self.session, self._to_segmentation = session, to_segmentation
        replaced_names = replacing.segment_names() if replacing is not None else []
        self.apply(session.view(existing_names=[n for n in self.other_segment_names() if n not in replaced_names]))
        self.show_overlay(default_overlay(self.overlays), DEFAULT_OPACITY)

    def _roll_back(self, snapshot):
        """After a failed import: this import's segments and nodes gone, the segmentation's settings and the
        slice views as ``snapshot`` found them."""
        node = self.segmentation_node
        if node.GetScene() is not None:
            for segment_id in self.segment_ids:
                node.GetSegmentation().RemoveSegment(segment_id)
            snapshot.restore_settings(node)
        remove_nodes([i for i in scene_node_ids() if i not in set(snapshot.node_ids)])
        restore_slice_layers(snapshot.layers)
        self.session, self.view, self.segment_ids, self.score_node, self.overlays = None, None, [], None, {}

    def overlays_ids(self):
        return [node.GetID() for node in self.overlays.values() if node is not None and node.GetScene() is not None]

    def segment_names(self):
        segmentation = self.segmentation_node.GetSegmentation()
        return [segmentation.GetSegment(i).GetName() for i in self.segment_ids if segmentation.GetSegment(i)]

    def withdraw(self):
        """Remove this result's segments and volumes (it is being replaced); the rest of the scene is the new one's."""
        if self.segmentation_node.GetScene() is not None:
            for segment_id in self.segment_ids:
                self.segmentation_node.GetSegmentation().RemoveSegment(segment_id)
        remove_nodes(self.overlays_ids())
        if self.history is not None and self in self.history:
            self.history.remove(self)
        self._before = self._expected = None
        self.session, self.view, self.segment_ids, self.score_node, self.overlays = None, None, [], None, {}

    @property
    def in_scene(self):
        return self._before is not None

    def changes_since_import(self):
        """What the user changed in the segmentation since this result was imported, in words; "" if nothing."""
        if self._expected is None or self.segmentation_node.GetScene() is None:
            return ""
        return describe_changes(self._expected, segmentation_fingerprint(self.segmentation_node))

    def _volume_on_input_grid(self, suffix, array, replaced_ids=()):
        """'<input> <suffix>' (or '... 2' beside a kept result's): ``array`` (numpy k, j, i) on the input's
        IJKToRAS, under the input's transform."""
        name = unique_node_name(f"{self.volume.GetName()} {suffix}", replaced_ids)
        result = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        result.CopyOrientation(self.volume)
        slicer.util.updateVolumeFromArray(result, array)
        result.SetAndObserveTransformNodeID(self.volume.GetTransformNodeID())
        result.CreateDefaultDisplayNodes()
        return result

    def other_segment_names(self):
        segmentation = self.segmentation_node.GetSegmentation()
        return [segmentation.GetSegment(i).GetName() for i in segmentation.GetSegmentIDs() if i not in self.segment_ids]

    def apply(self, view):
        """Replace this run's segments by ``view``'s: one shared labelmap layer, one label value per segment."""
        segmentation = self.segmentation_node.GetSegmentation()
        for segment_id in self.segment_ids:
            segmentation.RemoveSegment(segment_id)
        self.segment_ids = []
        layer = labelmap_layer(view.labels, self._to_segmentation)
        for spec in view.segments:
            segment = slicer.vtkSegment()
            segment.SetName(spec.name)
            segment.SetColor(*spec.color)
            segment.SetLabelValue(spec.label)
            segment.SetTag(segment.GetTerminologyEntryTagName(), spec.terminology)
            segment.AddRepresentation(BINARY_LABELMAP, layer)
            segment_id = segmentation.GenerateUniqueSegmentID(spec.name)
            if not segmentation.AddSegment(segment, segment_id):
                raise RuntimeError(f"could not add segment {spec.name!r}")
            self.segment_ids.append(segment_id)
        self.view = view

    def apply_threshold(self, threshold):
        if self.session and self.session.live:
            self.apply(self.session.view(threshold, self.other_segment_names()))
            self._expected = segmentation_fingerprint(self.segmentation_node)

    def undo(self, discardEdits=False):
        """Put the scene back as it was before this result (see the module docstring). Refuses (UserError) while a
        newer result is in the scene, and (EditedResultError) when the segmentation was edited since, unless
        ``discardEdits``."""
        if not self.in_scene:
            return
        if self.history and self.history[-1] is not self:
            raise UserError("A newer result is still in the scene: results are undone newest first.")
        node, before = self.segmentation_node, self._before
        changes = self.changes_since_import()
        if changes and not discardEdits:
            raise EditedResultError(f"The segmentation '{node.GetName()}' was edited after this result ({changes}); "
                                    "undoing it discards those edits.")
        if node.GetScene() is not None:
            if changes:
                before.restore_segments(node)
            else:  # only this run's segments go: the others, with their display properties, stay as they are
                for segment_id in self.segment_ids:
                    node.GetSegmentation().RemoveSegment(segment_id)
            before.restore_settings(node)
        remove_nodes(self.added_node_ids)
        restore_slice_layers(before.layers)
        if self.history is not None and self in self.history:
            self.history.remove(self)
        self._before = self._expected = None
        self.session, self.view, self.segment_ids, self.score_node, self.overlays = None, None, [], None, {}

    def show_overlay(self, name, opacity=DEFAULT_OPACITY):
        """Slice views: the input as background, overlay ``name`` (or none) as foreground at ``opacity`` (0..1)."""
        node = self.overlays.get(name)
        if self.volume.GetScene() is not None:
            slicer.util.setSliceViewerLayers(background=self.volume)
        slicer.util.setSliceViewerLayers(foreground=node if node is not None and node.GetScene() else None,
                                         foregroundOpacity=min(max(float(opacity), 0.0), 1.0))

    def centre_on_lesion(self, row):
        if not self.view or row >= len(self.view.lesions):
            return
        point = list(lesion_centre_ras(self.view.lesions[row]))
        parent = self.volume.GetParentTransformNode()
        if parent:  # centroids are in the volume's local frame
            to_world = vtk.vtkGeneralTransform()
            parent.GetTransformToWorld(to_world)
            point = list(to_world.TransformPoint(point))
        slicer.modules.markups.logic().JumpSlicesToLocation(*point, True)

    def open_in_segment_editor(self):
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.SegmentEditorWidget.editor
        editor.setSegmentationNode(self.segmentation_node)
        set_source = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode  # < 5.4: "master"
        set_source(self.volume)
        if self.segment_ids:
            editor.setCurrentSegmentID(self.segment_ids[0])


def style_as_map(node):
    """A 0..1 map as a colour overlay whose zeros are transparent: it only tints the voxels it marks."""
    display = node.GetDisplayNode()
    colors = slicer.mrmlScene.GetFirstNodeByName("Inferno") or slicer.mrmlScene.GetNodeByID("vtkMRMLColorTableNodeRainbow")
    display.SetAndObserveColorNodeID(colors.GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetThreshold(0.01, 1.0)
    display.ApplyThresholdOn()


def style_like(node, source):
    """``node`` shown with ``source``'s window/level, colours and interpolation, so fading compares like with like."""
    display, shown = node.GetDisplayNode(), source.GetDisplayNode()
    if shown is None:
        return
    display.AutoWindowLevelOff()
    display.SetWindowLevel(shown.GetWindow(), shown.GetLevel())
    display.SetAndObserveColorNodeID(shown.GetColorNodeID())
    display.SetInterpolate(shown.GetInterpolate())
