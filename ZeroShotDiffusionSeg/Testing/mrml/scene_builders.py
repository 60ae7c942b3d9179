"""Small synthetic inputs for the real-MRML tests: an oblique anisotropic volume, a known result on its grid."""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

SHAPE = (12, 40, 48)  # numpy (k, j, i)
SPACING = (0.8, 0.6, 2.5)  # (i, j, k) mm: anisotropic
ORIGIN = (-20.0, 15.0, -7.5)
LESION_1 = (slice(3, 7), slice(8, 20), slice(10, 26))  # numpy (k, j, i), score 0.9
LESION_2 = (slice(8, 10), slice(28, 32), slice(30, 34))  # score 0.6: gone above 0.6
ANATOMY = (slice(1, 5), slice(24, 34), slice(4, 14))  # an existing segment: 400 voxels


def oblique_volume(name="CT"):
    """A scalar volume with rotated axes and anisotropic spacing; voxel values vary so nothing is uniform."""
    volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    array = (np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) % 97) - 40
    slicer.util.updateVolumeFromArray(volume, array.astype(np.int16))
    volume.SetSpacing(*SPACING)
    volume.SetOrigin(*ORIGIN)
    rotation = vtk.vtkTransform()
    rotation.RotateWXYZ(25, 0.3, 0.2, 0.9)
    directions = vtk.vtkMatrix4x4()
    rotation.GetMatrix(directions)
    volume.SetIJKToRASDirectionMatrix(directions)
    volume.CreateDefaultDisplayNodes()
    return volume


def linear_transform(name="moved", angle=12.0, translation=(7.0, -4.0, 3.0)):
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    transform = vtk.vtkTransform()
    transform.Translate(*translation)
    transform.RotateWXYZ(angle, 0.1, 0.9, 0.4)
    node.SetMatrixTransformToParent(transform.GetMatrix())
    return node


def expected_labels():
    labels = np.zeros(SHAPE, np.uint16)
    labels[LESION_1], labels[LESION_2] = 1, 2
    return labels


def counterfactual_arrays(input_array):
    """(healthy, residual) as a pseudo-healthy run writes them: LESION_1 repainted in the input's pixel type,
    a float32 residual in 0..1 that is highest there; numpy (k, j, i)."""
    healthy = np.array(input_array, copy=True)
    healthy[LESION_1] = 11
    residual = np.zeros(input_array.shape, np.float32)
    residual[LESION_1] = np.linspace(0.2, 1.0, healthy[LESION_1].size, dtype=np.float32).reshape(healthy[LESION_1].shape)
    residual[LESION_2] = 0.05
    return healthy, residual


def write_result(input_path, out_dir, labels=None, score=None, spacing_factor=1.0, healthy=False,
                 healthy_spacing_factor=1.0):
    """labels.nrrd and score.nrrd on the input's grid (as the worker writes them); another grid if asked.
    ``healthy``: also healthy.nrrd and residual.nrrd (counterfactual_arrays), on a grid of their own if asked."""
    os.makedirs(out_dir, exist_ok=True)
    image = sitk.ReadImage(input_path)
    labels = expected_labels() if labels is None else labels
    if score is None:
        score = np.zeros(labels.shape, np.float32)
        score[labels == 1], score[labels == 2] = 0.9, 0.6
    arrays = [("labels", labels, spacing_factor), ("score", score, spacing_factor)]
    if healthy:
        pseudo_healthy, residual = counterfactual_arrays(sitk.GetArrayFromImage(image))
        arrays += [("healthy", pseudo_healthy, healthy_spacing_factor), ("residual", residual, healthy_spacing_factor)]
    files = {}
    for name, array, factor in arrays:
        result = sitk.GetImageFromArray(array)
        result.CopyInformation(image)
        result.SetSpacing([s * factor for s in image.GetSpacing()])
        files[name] = os.path.join(out_dir, f"{name}.nrrd")
        sitk.WriteImage(result, files[name])
    return files


def labelmap_on_volume_voxels(mask, volume, segmentation_node):
    """A labelmap in ``segmentation_node``'s frame covering exactly ``mask``'s voxels of ``volume`` (test oracle)."""
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
    between, ijk_to_ras, matrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    assert slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
        volume.GetParentTransformNode(), segmentation_node.GetParentTransformNode(), between)
    volume.GetIJKToRASMatrix(ijk_to_ras)
    vtk.vtkMatrix4x4.Multiply4x4(between, ijk_to_ras, matrix)
    image.SetImageToWorldMatrix(matrix)
    return image


def segment_in_volume_grid(segmentation_node, segment_id, volume):
    """A segment exported back with the Segmentations logic onto ``volume``'s grid, numpy (k, j, i)."""
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume)


def world_voxels(segmentation_node, segment_id):
    """World (RAS) centres of a segment's set voxels, read from its internal labelmap: independent of export."""
    image = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, image)
    from vtk.util.numpy_support import vtk_to_numpy

    array = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])
    extent = image.GetExtent()
    k, j, i = np.nonzero(array)
    ijk = np.stack([i + extent[0], j + extent[2], k + extent[4], np.ones_like(i)]).astype(float)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return _to_world(matrix, ijk, segmentation_node.GetParentTransformNode())


def world_voxel_centres(volume, mask):
    """World centres of ``mask``'s voxels on ``volume``'s grid (its parent transform applied)."""
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    k, j, i = np.nonzero(mask)
    ijk = np.stack([i, j, k, np.ones_like(i)]).astype(float)
    return _to_world(matrix, ijk, volume.GetParentTransformNode())


def _to_world(matrix, ijk, parent):
    """Homogeneous voxel indices (4, N) through ``matrix`` and then ``parent``'s transform to world, as (N, 3)."""
    points = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]) @ ijk
    if parent:
        to_world = vtk.vtkGeneralTransform()
        parent.GetTransformToWorld(to_world)
        points[:3] = np.array([to_world.TransformPoint(p) for p in points[:3].T]).T
    return points[:3].T
