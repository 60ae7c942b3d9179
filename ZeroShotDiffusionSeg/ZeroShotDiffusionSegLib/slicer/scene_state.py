"""What an import changes in the scene, captured before it, so that undo can put the scene back exactly.

MRML glue (imports ``slicer``). ``SceneSnapshot.capture`` records, before a result is imported: the scene's
node ids, every slice view's layers and foreground opacity, and of the output segmentation its reference
node, reference geometry, source representation, a copy of its segments and each segment's display
properties. ``segmentation_fingerprint`` is what a user's edit changes (segments added, removed, renamed,
recoloured, voxels painted or erased); comparing it with the one taken after the import tells whether
undoing would discard the user's work.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import slicer
import vtk

REFERENCE_ROLE = "referenceImageGeometryRef"  # vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
DISPLAY_PROPERTIES = ("Visibility", "Visibility3D", "Visibility2DFill", "Visibility2DOutline", "Opacity3D",
                      "Opacity2DFill", "Opacity2DOutline")


def geometry_parameter():
    return slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()


def scene_node_ids():
    nodes = slicer.mrmlScene.GetNodes()
    return [nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())]


def remove_nodes(node_ids):
    """Remove these nodes (newest first) with their display and storage nodes, where they still exist."""
    scene = slicer.mrmlScene
    for node_id in reversed(list(node_ids)):
        node = scene.GetNodeByID(node_id)
        if node is None:
            continue
        attached = []
        if node.IsA("vtkMRMLDisplayableNode"):
            attached += [node.GetNthDisplayNodeID(i) for i in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLStorableNode"):
            attached += [node.GetNthStorageNodeID(i) for i in range(node.GetNumberOfStorageNodes())]
        scene.RemoveNode(node)
        for attached_id in attached:
            if attached_id and scene.GetNodeByID(attached_id) is not None:
                scene.RemoveNode(scene.GetNodeByID(attached_id))


def unique_node_name(base, ignored_ids=()):
    """``base``, or ``base 2``, ``base 3``... : the first name no other node has (nodes in ``ignored_ids`` aside)."""
    nodes = slicer.mrmlScene.GetNodes()
    taken = {nodes.GetItemAsObject(i).GetName() for i in range(nodes.GetNumberOfItems())
             if nodes.GetItemAsObject(i).GetID() not in set(ignored_ids)}
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base} {number}"
    return name


def slice_layers():
    """[(composite node id, background id, foreground id, foreground opacity)] of every slice view."""
    nodes = slicer.mrmlScene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    composites = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
    return [(c.GetID(), c.GetBackgroundVolumeID(), c.GetForegroundVolumeID(), c.GetForegroundOpacity()) for c in composites]


def restore_slice_layers(layers):
    for composite_id, background, foreground, opacity in layers:
        composite = slicer.mrmlScene.GetNodeByID(composite_id)
        if composite is not None:
            composite.SetBackgroundVolumeID(background if slicer.mrmlScene.GetNodeByID(background or "") else None)
            composite.SetForegroundVolumeID(foreground if slicer.mrmlScene.GetNodeByID(foreground or "") else None)
            composite.SetForegroundOpacity(opacity)


def _layer_digest(image):
    if image is None:
        return None
    from vtk.util import numpy_support

    digest = hashlib.blake2b(digest_size=16)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    digest.update(repr((image.GetExtent(), [matrix.GetElement(r, c) for r in range(4) for c in range(4)])).encode())
    scalars = image.GetPointData().GetScalars()
    if scalars is not None:
        digest.update(numpy_support.vtk_to_numpy(scalars).tobytes())
    return digest.hexdigest()


def segmentation_fingerprint(node):
    """(per segment: id, name, colour, label value, layer; per labelmap layer: a digest of its voxels)."""
    segmentation = node.GetSegmentation()
    rows = []
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        rows.append((segment_id, segment.GetName(), tuple(round(c, 6) for c in segment.GetColor()),
                     segment.GetLabelValue(), segmentation.GetLayerIndex(segment_id)))
    layers = tuple(_layer_digest(segmentation.GetLayerDataObject(i)) for i in range(segmentation.GetNumberOfLayers()))
    return tuple(rows), layers


def describe_changes(expected, current):
    """What the user did between two fingerprints, in words ("segment 'x' added; voxels edited"), or ""."""
    (old_rows, old_layers), (new_rows, new_layers) = expected, current
    old, new = {r[0]: r for r in old_rows}, {r[0]: r for r in new_rows}
    parts = [f"segment '{new[i][1]}' added" for i in new if i not in old]
    parts += [f"segment '{old[i][1]}' removed" for i in old if i not in new]
    parts += [f"segment '{old[i][1]}' renamed to '{new[i][1]}'" for i in old if i in new and old[i][1] != new[i][1]]
    parts += [f"segment '{new[i][1]}' recoloured" for i in old if i in new and old[i][2] != new[i][2]]
    if old_layers != new_layers and not parts:
        parts.append("voxels painted or erased")
    return "; ".join(parts)


def display_properties(node):
    """{segment id: {property: value}} of the segmentation's display node (visibility, opacities)."""
    display = node.GetDisplayNode()
    if display is None:
        return {}
    return {segment_id: {name: getattr(display, "GetSegment" + name)(segment_id) for name in DISPLAY_PROPERTIES}
            for segment_id in node.GetSegmentation().GetSegmentIDs()}


def restore_display_properties(node, properties):
    display = node.GetDisplayNode()
    if display is None:
        return
    for segment_id, values in properties.items():
        for name, value in values.items():
            getattr(display, "SetSegment" + name)(segment_id, value)


@dataclass
class SceneSnapshot:
    """The scene as an import found it (see the module docstring)."""

    node_ids: List[str]
    layers: List[Tuple[str, Optional[str], Optional[str], float]]
    reference_id: Optional[str] = None
    geometry: str = ""
    source_representation: str = ""
    segments: Optional[object] = None  # a vtkSegmentation deep copy
    display: Dict[str, dict] = field(default_factory=dict)

    @classmethod
    def capture(cls, segmentation_node):
        segmentation = segmentation_node.GetSegmentation()
        copy = slicer.vtkSegmentation()
        copy.DeepCopy(segmentation)
        return cls(scene_node_ids(), slice_layers(), segmentation_node.GetNodeReferenceID(REFERENCE_ROLE),
                   segmentation.GetConversionParameter(geometry_parameter()),
                   segmentation.GetSourceRepresentationName(), copy, display_properties(segmentation_node))

    def restore_settings(self, segmentation_node):
        """The segmentation's reference node, reference geometry and source representation as they were."""
        segmentation = segmentation_node.GetSegmentation()
        segmentation_node.SetNodeReferenceID(REFERENCE_ROLE, self.reference_id)
        segmentation.SetConversionParameter(geometry_parameter(), self.geometry)
        segmentation.SetSourceRepresentationName(self.source_representation)

    def restore_segments(self, segmentation_node):
        """Every segment as it was (after user edits): content, names, colours and display properties."""
        segmentation_node.GetSegmentation().DeepCopy(self.segments)
        restore_display_properties(segmentation_node, self.display)
