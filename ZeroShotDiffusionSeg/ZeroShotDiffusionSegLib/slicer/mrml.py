"""MRML helpers of the panel: engine setup hooks, input/output checks, the volume's grid.

One of the few files of this package that import ``slicer`` (with ``importer``, ``logic``, ``run_view``
and ``scene_state``). Everything here applies decisions made elsewhere: the setup order comes from
``setup_state``, geometry conversions from ``geometry``, wording from ``messages``.
"""

from __future__ import annotations

import qt
import slicer
import vtk

from ..errors import UserError
from . import setup_state
from .geometry import geometry_from_ijk_to_ras


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
        install_packages=lambda packages: [slicer.util.pip_install(arguments)
                                           for arguments in setup_state.pip_install_arguments(packages)],
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


def check_output_segmentation(node):
    """Refuse a segmentation whose segments are not stored as binary labelmaps (e.g. loaded from STL).

    The result is a labelmap; adding it would fail half-way or convert the user's surfaces without asking
    (the Segment Editor asks first). An empty segmentation is fine: the importer makes it a labelmap one.
    """
    if not node:
        return
    segmentation = node.GetSegmentation()
    source = segmentation.GetSourceRepresentationName()
    if segmentation.GetNumberOfSegments() and source != "Binary labelmap":
        raise UserError(f"The output segmentation '{node.GetName()}' stores its segments as '{source}' (e.g. loaded "
                        "from a model file): choose another or a new output segmentation, or make 'Binary labelmap' "
                        "its source representation in the Segmentations module.")


def _rows(matrix):
    return [[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]


def check_segmentation_geometry(volume, segmentation_node):
    """Refuse a segmentation whose own reference geometry (e.g. loaded from a .seg.nrrd) the input's voxels do
    not lie on: the result would have to be resampled, or that geometry overwritten. Neither is done."""
    from .geometry import lattices_aligned

    if not segmentation_node:
        return
    text = segmentation_node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    if not text:
        return
    reference, matrix = slicer.vtkOrientedImageData(), vtk.vtkMatrix4x4()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, reference)
    reference.GetImageToWorldMatrix(matrix)
    if not lattices_aligned(_rows(matrix), _rows(ijk_to_segmentation_matrix(volume, segmentation_node))):
        raise UserError(f"The output segmentation '{segmentation_node.GetName()}' has its own geometry, whose voxels "
                        "do not line up with the input volume's: choose a new output segmentation, or set its "
                        "geometry from the input volume (Segmentations module, Specify geometry).")


def ijk_to_segmentation_matrix(volume, segmentation_node):
    """The volume's IJK -> the segmentation's local frame (their transforms between), as a vtkMatrix4x4."""
    between = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
            volume.GetParentTransformNode(), segmentation_node.GetParentTransformNode(), between):
        raise UserError("The input volume and the output segmentation are under different non-linear transforms: "
                        "harden the transforms (Data module) first.")
    ijk_to_ras, result = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    vtk.vtkMatrix4x4.Multiply4x4(between, ijk_to_ras, result)
    return result
