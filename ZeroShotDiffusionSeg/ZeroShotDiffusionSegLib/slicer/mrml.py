"""The MRML glue of the panel: the only file of this package that imports ``slicer``.

Imported by the module file inside Slicer only (SlicerNNUnet keeps its widget and logic
in its library the same way). Everything here applies decisions made elsewhere: names,
colours, terminology and lesion rows come from ``results.ResultSession``, the setup order
from ``setup_state``, geometry checks from ``geometry``. The Slicer self-test in
Testing/Python exercises it with a stub runner.
"""

from __future__ import annotations

import numpy as np
import qt
import slicer
import vtk

from ..errors import UserError
from . import setup_state
from .geometry import geometries_match, geometry_from_ijk_to_ras
from .results import ResultSession, lesion_centre_ras

SCORE_OPACITY = 0.4


def ijk_to_ras_geometry(volume_node):
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return geometry_from_ijk_to_ras([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def install_torch():
    """torch through the PyTorch extension, which picks the CUDA build matching the driver."""
    try:
        import PyTorchUtils
    except ImportError:
        raise UserError("Install the 'PyTorch' extension in the Extensions Manager, restart Slicer and try again.")
    if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=">=2.1") is None:
        raise UserError("PyTorch was not installed; see the Python console, or use the PyTorch Utils module.")


def setup_hooks(requirements, settings_prefix):
    """SetupHooks doing the real thing in Slicer: dialogs, PyTorchUtils, pip, QSettings."""
    store = qt.QSettings()
    licence_key = lambda key: f"{settings_prefix}licence/{key}"  # noqa: E731
    return setup_state.SetupHooks(
        torch_version=lambda: setup_state.installed_version("torch"),
        missing_packages=lambda: setup_state.missing_requirements(requirements, setup_state.installed_version),
        confirm=lambda title, text: slicer.util.confirmOkCancelDisplay(text, windowTitle=title),
        install_torch=install_torch,
        install_packages=lambda packages: slicer.util.pip_install(" ".join(setup_state.without_torch(packages))),
        licence_accepted=lambda key: store.value(licence_key(key)) == "accepted",
        accept_licence=lambda licence: slicer.util.confirmOkCancelDisplay(licence.text, windowTitle=licence.name),
        remember_licence=lambda key: store.setValue(licence_key(key), "accepted"),
    )


def check_input_volume(volume, uses_points):
    from .messages import volume_type_problem

    if not volume or not volume.GetImageData():
        raise UserError("Choose an input volume.")
    image = volume.GetImageData()
    problem = volume_type_problem(volume.GetClassName(), image.GetNumberOfScalarComponents(), image.GetDimensions())
    if problem:
        raise UserError(problem)
    if uses_points and volume.GetParentTransformNode():
        raise UserError("The input volume is transformed: harden the transform (Data module) before using seeds or an ROI.")


class ResultImporter:
    """One finished run in the scene: its segments, score overlay, lesion table and undo state."""

    def __init__(self, volume, segmentation_node, request, presets=()):
        self.volume, self.segmentation_node, self.request, self.presets = volume, segmentation_node, request, presets
        self.session, self.view, self.segment_ids, self.score_node, self._undo = None, None, [], None, None

    def load(self, files):
        """Read labels/score (checking their grid), save the undo state, create the segments."""
        volume, node = self.volume, self.segmentation_node
        if volume.GetScene() is None or node.GetScene() is None:
            raise UserError("The input volume or the output segmentation was deleted during the run.")
        geometry = ijk_to_ras_geometry(volume)
        labels_node = slicer.util.loadLabelVolume(files["labels"], {"show": False})
        try:
            self.score_node = slicer.util.loadVolume(files["score"], {"name": f"{volume.GetName()} score", "show": False})
            if not all(geometries_match(geometry, ijk_to_ras_geometry(n)) for n in (labels_node, self.score_node)):
                slicer.mrmlScene.RemoveNode(self.score_node)
                raise UserError("The engine returned a result on a different grid than the input; not imported.")
            labels = slicer.util.arrayFromVolume(labels_node).copy()
        finally:
            slicer.mrmlScene.RemoveNode(labels_node)
        request = self.request
        self.session = ResultSession(request.mode, request.prompt, slicer.util.arrayFromVolume(self.score_node).copy(),
                                     labels, geometry, request.params.selection_threshold, not request.binary,
                                     request.min_volume_mm3, self.presets)
        self._undo = slicer.vtkSegmentation()
        self._undo.DeepCopy(node.GetSegmentation())
        slicer.mrmlScene.SaveStateForUndo()
        for result_node in (node, self.score_node):
            result_node.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume)  # also sets the geometry node reference
        node.CreateDefaultDisplayNodes()
        hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
        study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(volume))
        for result_node in (node, self.score_node):
            hierarchy.SetItemParent(hierarchy.GetItemByDataNode(result_node), study)
        self.apply(self.session.view(existing_names=self.other_segment_names()))
        self.show_score(True)
        return self

    def other_segment_names(self):
        segmentation = self.segmentation_node.GetSegmentation()
        return [segmentation.GetSegment(i).GetName() for i in segmentation.GetSegmentIDs() if i not in self.segment_ids]

    def apply(self, view):
        """Replace this run's segments by ``view``'s (same grid as the input volume)."""
        segmentation = self.segmentation_node.GetSegmentation()
        for segment_id in self.segment_ids:
            segmentation.RemoveSegment(segment_id)
        self.segment_ids = []
        for spec in view.segments:
            segment_id = segmentation.AddEmptySegment("", spec.name, spec.color)
            segment = segmentation.GetSegment(segment_id)
            segment.SetTag(segment.GetTerminologyEntryTagName(), spec.terminology)
            mask = (view.labels == spec.label).astype(np.uint8)
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask, self.segmentation_node, segment_id, self.volume)
            self.segment_ids.append(segment_id)
        self.view = view

    def apply_threshold(self, threshold):
        if self.session and self.session.live:
            self.apply(self.session.view(threshold, self.other_segment_names()))

    def undo(self):
        """Put the segmentation back as it was before this result."""
        if self._undo is not None and self.segmentation_node.GetScene():
            self.segmentation_node.GetSegmentation().DeepCopy(self._undo)
        self._undo, self.session, self.view, self.segment_ids = None, None, None, []

    def show_score(self, show):
        if not self.score_node or not self.score_node.GetScene():
            return
        display = self.score_node.GetDisplayNode()
        colors = slicer.mrmlScene.GetFirstNodeByName("Inferno") or slicer.mrmlScene.GetNodeByID("vtkMRMLColorTableNodeRainbow")
        display.SetAndObserveColorNodeID(colors.GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        display.SetThreshold(0.01, 1.0)  # zero score transparent: the overlay only tints candidate voxels
        display.ApplyThresholdOn()
        slicer.util.setSliceViewerLayers(foreground=self.score_node if show else None, foregroundOpacity=SCORE_OPACITY)

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
