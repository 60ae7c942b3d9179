"""Render the README's and the Extensions Index's screenshots offscreen: results in Slicer's own views, not the panel.

    python scripts/make_screenshots.py [--data ../shared/data/pyradiomics-testcases] [--case brain1]
                                       [--result-dir DIR] [--out Screenshots]

Runs Slicer's MRML scene, slice logic and the Segmentations displayable managers from the ``slicer-core`` wheel
(the headless Slicer of ``ZeroShotDiffusionSeg/Testing/mrml``) with VTK offscreen rendering (EGL/OSMesa, no
display needed), and imports the result through the extension's own ``ResultImporter``, as the panel does:

- ``Screenshot01.png``: axial, sagittal and coronal slices through the lesion, the segments (fill and outline)
  and the score map (0.4 opacity) over the volume;
- ``Screenshot02.png``: the segments' 3-D surface, seen from the front left, with the axial slice below it;
- ``Screenshot03.png``: the pseudo-healthy fade, overlay opacity 0, 0.5 and 1, segment outlines on.

To render an engine result: ``--export-input DIR`` writes the case as Slicer loads it (``DIR/input.nrrd``;
Slicer's reader may order the slices differently from the file), then ``zsdseg volume DIR/input.nrrd --prompt
"brain tumor" --pseudo-healthy --out DIR`` and ``--result-dir DIR`` renders labels/score/healthy/residual.nrrd.
Without it the result is a stand-in built from the case's reference mask (``<case>_label.nrrd``): its connected
components as lesions, a smoothed mask as the score, and as the pseudo-healthy volume a normalised-convolution
fill of the lesion from the tissue around it. That is what the committed screenshots show (no diffusion
weights where they were made). Either way the files are on the exported input's grid, as the panel's are.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "ZeroShotDiffusionSeg"
VIEW_SIZE = 420


def stand_in_result(image_path, label_path, out_dir):
    """labels/score/healthy/residual.nrrd on the image's grid, from the reference mask (see the module docstring)."""
    import SimpleITK as sitk
    from scipy import ndimage

    image = sitk.ReadImage(str(image_path))
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path))) > 0
    labels, _ = ndimage.label(mask)
    spacing_kji = np.array(image.GetSpacing()[::-1])
    sigma = 2.0 / spacing_kji  # 2 mm
    score = ndimage.gaussian_filter(mask.astype(np.float32), sigma)
    score = np.clip(score / max(float(score.max()), 1e-6), 0.0, 1.0)
    score[labels > 0] = np.maximum(score[labels > 0], 0.6)
    around = ndimage.binary_dilation(mask, iterations=3) & ~mask
    wide = 6.0 / spacing_kji  # 6 mm
    weights = ndimage.gaussian_filter((~mask).astype(np.float32), wide)
    fill = ndimage.gaussian_filter(np.where(mask, 0.0, values), wide) / np.maximum(weights, 1e-6)
    healthy = np.where(mask | around, fill, values)
    residual = np.abs(values - healthy)
    residual = residual / max(float(residual.max()), 1e-6)
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    for name, array in (("labels", labels.astype(np.uint16)), ("score", score.astype(np.float32)),
                        ("healthy", healthy.astype(sitk.GetArrayViewFromImage(image).dtype)),
                        ("residual", residual.astype(np.float32))):
        result = sitk.GetImageFromArray(array)
        result.CopyInformation(image)
        files[name] = os.path.join(out_dir, f"{name}.nrrd")
        sitk.WriteImage(result, files[name], True)
    return files


class SliceView:
    """One slice view rendered offscreen: the slice logic's blended layers and Slicer's 2-D displayable managers."""

    def __init__(self, slice_logic, size=VIEW_SIZE):
        import slicer
        import vtk

        self.logic, self.node = slice_logic, slice_logic.GetSliceNode()
        self.node.SetDimensions(size, size, 1)
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetSize(size, size)
        self.renderer = vtk.vtkRenderer()
        self.window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()  # the displayable managers observe one
        self.interactor.SetRenderWindow(self.window)
        mapper = vtk.vtkImageMapper()
        mapper.SetInputConnection(slice_logic.GetImageDataConnection())
        mapper.SetColorWindow(255)
        mapper.SetColorLevel(127.5)
        self.image = vtk.vtkActor2D()
        self.image.SetMapper(mapper)
        self.renderer.AddViewProp(self.image)
        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(slicer.app.applicationLogic())
        if not factory.IsDisplayableManagerRegistered("vtkMRMLSegmentationsDisplayableManager2D"):
            factory.RegisterDisplayableManager("vtkMRMLSegmentationsDisplayableManager2D")
        self.managers = factory.InstantiateDisplayableManagers(self.renderer)
        self.managers.SetMRMLDisplayableNode(self.node)

    def show(self, ras, zoom=1.0):
        self.logic.FitSliceToAll()
        fov = self.node.GetFieldOfView()
        self.node.SetFieldOfView(fov[0] / zoom, fov[1] / zoom, fov[2])
        self.node.JumpSliceByCentering(*ras)
        return render(self.window)


def render(window):
    import vtk
    from vtk.util import numpy_support

    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    output = grab.GetOutput()
    width, height, _ = output.GetDimensions()
    rgb = numpy_support.vtk_to_numpy(output.GetPointData().GetScalars()).reshape(height, width, -1)[:, :, :3]
    return rgb[::-1].copy()  # VTK's rows go bottom-up


def surface_view(segmentation_node, size=(2 * VIEW_SIZE, VIEW_SIZE)):
    """The segments' closed surfaces through Slicer's 3-D displayable manager, seen from the front left."""
    import slicer
    import vtk

    segmentation_node.CreateClosedSurfaceRepresentation()
    view = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLViewNode", "View1")
    view.SetBackgroundColor(0.1, 0.1, 0.14)
    view.SetBackgroundColor2(0.1, 0.1, 0.14)
    view.SetBoxVisible(False)
    view.SetAxisLabelsVisible(False)
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    renderer = vtk.vtkRenderer()
    window.AddRenderer(renderer)
    interactor = vtk.vtkRenderWindowInteractor()
    interactor.SetRenderWindow(window)
    factory = slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(slicer.app.applicationLogic())
    if not factory.IsDisplayableManagerRegistered("vtkMRMLSegmentationsDisplayableManager3D"):
        factory.RegisterDisplayableManager("vtkMRMLSegmentationsDisplayableManager3D")
    managers = factory.InstantiateDisplayableManagers(renderer)
    managers.SetMRMLDisplayableNode(view)
    renderer.SetBackground(0.1, 0.1, 0.14)
    renderer.ResetCamera()
    camera = renderer.GetActiveCamera()
    camera.SetViewUp(0, 0, 1)
    focal = camera.GetFocalPoint()
    camera.SetPosition(focal[0] - 160, focal[1] + 220, focal[2] + 90)  # front left, above (RAS)
    renderer.ResetCamera()
    return render(window), (window, interactor, managers)


def save_png(rgb, path):
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(rgb)).save(path, optimize=True)
    print(f"wrote {path} ({rgb.shape[1]}x{rgb.shape[0]})")


def side_by_side(images, gap=4):
    height = max(image.shape[0] for image in images)
    parts = []
    for index, image in enumerate(images):
        parts.append(image)
        if index < len(images) - 1:
            parts.append(np.full((height, gap, 3), 255, np.uint8))
    return np.concatenate(parts, axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "pyradiomics-testcases"))
    parser.add_argument("--case", default="brain1")
    parser.add_argument("--prompt", default="brain tumor")
    parser.add_argument("--result-dir", help="an engine result on the exported input's grid (see above)")
    parser.add_argument("--export-input", help="write the case as Slicer loads it to this folder's input.nrrd, stop")
    parser.add_argument("--runtime", default=os.environ.get("ZSD_SLICER_RUNTIME")
                        or str(REPO.parent / "shared" / "slicer-runtime"))
    parser.add_argument("--out", default=str(REPO / "Screenshots"))
    args = parser.parse_args(argv)

    sys.path[:0] = [str(MODULE_DIR), str(MODULE_DIR / "Testing" / "mrml")]
    import headless_slicer

    headless_slicer.start(args.runtime, str(MODULE_DIR))
    import slicer
    from ZeroShotDiffusionSegLib.engine.healthy_params import PseudoHealthyParams
    from ZeroShotDiffusionSegLib.slicer.importer import ResultImporter
    from ZeroShotDiffusionSegLib.slicer.results import HEALTHY, SCORE
    from ZeroShotDiffusionSegLib.volume.request import VolumeRequest

    volume = slicer.util.loadVolume(str(Path(args.data) / f"{args.case}_image.nrrd"), {"name": args.case})
    if args.export_input:  # what the panel sends the engine
        os.makedirs(args.export_input, exist_ok=True)
        slicer.util.exportNode(volume, os.path.join(args.export_input, "input.nrrd"))
        return 0
    if args.result_dir:
        files = {name: str(Path(args.result_dir) / f"{name}.nrrd") for name in ("labels", "score", "healthy", "residual")
                 if (Path(args.result_dir) / f"{name}.nrrd").is_file()}
    else:
        work = tempfile.mkdtemp(dir=slicer.app.temporaryPath)
        mask = slicer.util.loadVolume(str(Path(args.data) / f"{args.case}_label.nrrd"), {"labelmap": True})
        slicer.util.exportNode(volume, os.path.join(work, "input.nrrd"))
        slicer.util.exportNode(mask, os.path.join(work, "mask.nrrd"))
        slicer.mrmlScene.RemoveNode(mask)
        files = stand_in_result(os.path.join(work, "input.nrrd"), os.path.join(work, "mask.nrrd"), work)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{args.case} tumor")
    request = VolumeRequest(prompt=args.prompt, mode="prompt",
                            pseudo_healthy=PseudoHealthyParams() if "healthy" in files else None)
    result = ResultImporter(volume, segmentation, request).load(files)
    display = segmentation.GetDisplayNode()
    display.SetOpacity2DFill(0.35)
    display.SetSliceIntersectionThickness(2)

    labels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, result.segment_ids[0], volume)
    k, j, i = (int(round(float(np.mean(axis)))) for axis in np.nonzero(labels))
    ras = [0.0] * 4
    matrix = __import__("vtk").vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    matrix.MultiplyPoint((i, j, k, 1.0), ras)
    views = [SliceView(logic) for logic in slicer.app.sliceLogics]  # Red, Yellow, Green, as Slicer lays them out
    for view, orientation in zip(views, ("Axial", "Sagittal", "Coronal")):
        view.node.SetOrientation(orientation)
    os.makedirs(args.out, exist_ok=True)

    result.show_overlay(SCORE, 0.4)
    save_png(side_by_side([view.show(ras[:3], zoom=zoom) for view, zoom in zip(views, (1.6, 1.6, 1.6))]),
             os.path.join(args.out, "Screenshot01.png"))

    surface, _keep = surface_view(segmentation)
    save_png(side_by_side([surface, views[0].show(ras[:3], zoom=1.0)]), os.path.join(args.out, "Screenshot02.png"))

    if HEALTHY in result.overlays:
        display.SetVisibility2DFill(False)
        fades = []
        for opacity in (0.0, 0.5, 1.0):
            result.show_overlay(HEALTHY, opacity)
            fades.append(views[0].show(ras[:3], zoom=2.2))
        save_png(side_by_side(fades), os.path.join(args.out, "Screenshot03.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
