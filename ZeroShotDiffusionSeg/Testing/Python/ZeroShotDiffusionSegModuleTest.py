"""Self-test inside 3D Slicer: the panel's logic end to end with a stub runner (no torch, no model).

A synthetic oblique, anisotropic volume is exported by the logic, "segmented" by a stub that writes a
known labelmap and score map on the input's grid (as the engine does), and imported. The test checks
segment names and terminology, that every voxel lands where the stub put it (geometry), the live
threshold, and undo; with the pseudo-healthy checkbox, the two extra volumes, the fade and the inert
threshold. Registered with slicer_add_python_unittest; the same cases run headless against real MRML
in Testing/mrml/test_module_self_test.py. Needs no download.
"""

import os
import unittest

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from ZeroShotDiffusionSegLib.runners.base import JobHandle, Runner, RunnerEvent

SHAPE = (24, 64, 56)  # numpy (k, j, i)
LESION_1 = (slice(6, 14), slice(10, 40), slice(12, 42))  # numpy (k, j, i), score 0.9
LESION_2 = (slice(18, 20), slice(50, 54), slice(4, 8))  # score 0.6: disappears above 0.6
REPAINTED = 11  # the stub's pseudo-healthy voxels inside LESION_1


class StubRunner(Runner):
    """Writes the known result next to the input, with the input's geometry, like the worker."""

    def __init__(self):
        self.job, self.events, self.requests = None, [], []

    @property
    def busy(self):
        return self.job is not None

    def start(self, input_path, out_dir, request):
        self.requests.append(request)
        os.makedirs(out_dir, exist_ok=True)
        image = sitk.ReadImage(input_path)
        shape = sitk.GetArrayViewFromImage(image).shape
        labels, score = np.zeros(shape, np.uint16), np.zeros(shape, np.float32)
        labels[LESION_1], score[LESION_1] = 1, 0.9
        labels[LESION_2], score[LESION_2] = 2, 0.6
        arrays = [("labels", labels), ("score", score)]
        if request.pseudo_healthy is not None:  # what a pseudo-healthy run adds: input's pixel type, and 0..1
            healthy, residual = sitk.GetArrayFromImage(image), np.zeros(shape, np.float32)
            healthy[LESION_1], residual[LESION_1] = REPAINTED, 0.8
            arrays += [("healthy", healthy), ("residual", residual)]
        files = {}
        for name, array in arrays:
            result = sitk.GetImageFromArray(array)
            result.CopyInformation(image)
            files[name] = os.path.join(out_dir, f"{name}.nrrd")
            sitk.WriteImage(result, files[name])
        self.job = JobHandle(input_path, out_dir)
        self.events = [RunnerEvent("progress", self.job.job_id, stage="segment", fraction=0.5),
                       RunnerEvent("done", self.job.job_id, files=files, messages=["stub"])]
        return self.job

    def poll(self):
        events, self.events = self.events, []
        if any(event.final for event in events):
            self.job = None
        return events

    def cancel(self):
        if self.job:
            self.events.append(RunnerEvent("cancelled", self.job.job_id))
            self.job = None

    def shutdown(self):
        self.cancel()


class ZeroShotDiffusionSegModuleTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (self.test_run_import_threshold_undo, self.test_cancel_and_wrong_input,
                     self.test_pseudo_healthy_volumes_fade_and_inert_threshold):
            self.setUp()
            test()

    def makeObliqueVolume(self):
        """A head-sized scalar volume with rotated axes and anisotropic spacing (no download needed)."""
        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "oblique")
        values = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 251).astype(np.int16)
        slicer.util.updateVolumeFromArray(volume, values)
        volume.SetSpacing(0.9, 0.7, 3.0)
        volume.SetOrigin(-25.0, 30.0, -12.0)
        rotation = vtk.vtkTransform()
        rotation.RotateWXYZ(25, 0.3, 0.2, 0.9)
        volume.SetIJKToRASDirectionMatrix(rotation.GetMatrix())
        volume.CreateDefaultDisplayNodes()
        return volume

    def runToDone(self, logic, parameters):
        settings = logic.settingsFrom(parameters)
        logic.start(parameters, settings)
        events = logic.poll()
        self.assertEqual([e.kind for e in events], ["progress", "done"])
        logic.loadResult(events[-1].files)
        return events

    def test_run_import_threshold_undo(self):
        from ZeroShotDiffusionSeg import ZeroShotDiffusionSegLogic

        volume = self.makeObliqueVolume()
        stub = StubRunner()
        logic = ZeroShotDiffusionSegLogic(runnerFactory=lambda settings: stub)
        parameters = logic.getParameterNode()
        parameters.inputVolume = volume
        parameters.prompt = "brain tumor"
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "existing")
        segmentationNode.GetSegmentation().AddEmptySegment("kept", "kept")
        parameters.outputSegmentation = segmentationNode
        self.runToDone(logic, parameters)
        self.assertEqual(stub.requests[0].prompt, "brain tumor")
        segmentation = segmentationNode.GetSegmentation()
        ids = logic.result.segment_ids
        names = [segmentation.GetSegment(i).GetName() for i in ids]
        self.assertEqual(names, ["brain tumor 1", "brain tumor 2"])
        segment, terminology = segmentation.GetSegment(ids[0]), vtk.mutable("")
        self.assertTrue(segment.GetTag(segment.GetTerminologyEntryTagName(), terminology))
        terminology = str(terminology)
        self.assertIn("SCT^108369006^Neoplasm", terminology)
        self.assertIn("SCT^12738006^Brain", terminology)
        # Geometry: each voxel is where the stub wrote it, on the oblique input grid.
        for segmentId, box in zip(ids, (LESION_1, LESION_2)):
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volume)
            expected = np.zeros(slicer.util.arrayFromVolume(volume).shape, bool)
            expected[box] = True
            self.assertEqual(mask.shape, expected.shape)
            self.assertTrue(np.array_equal(mask > 0, expected))
        scoreMatrix, volumeMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        logic.result.score_node.GetIJKToRASMatrix(scoreMatrix)
        volume.GetIJKToRASMatrix(volumeMatrix)
        for r in range(3):
            for c in range(4):
                self.assertAlmostEqual(scoreMatrix.GetElement(r, c), volumeMatrix.GetElement(r, c), places=4)
        self.assertEqual(len(logic.result.view.lesions), 2)
        # Live threshold: above 0.6 only the large lesion remains, without running the engine again.
        logic.result.apply_threshold(0.7)
        names = [segmentation.GetSegment(i).GetName() for i in logic.result.segment_ids]
        self.assertEqual(names, ["brain tumor"])
        self.assertEqual(len(stub.requests), 1)
        # Undo puts the segmentation back as it was before the result.
        logic.result.undo()
        self.assertEqual([segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())],
                         ["kept"])

    def test_pseudo_healthy_volumes_fade_and_inert_threshold(self):
        from ZeroShotDiffusionSeg import ZeroShotDiffusionSegLogic

        volume = self.makeObliqueVolume()
        stub = StubRunner()
        logic = ZeroShotDiffusionSegLogic(runnerFactory=lambda settings: stub)
        parameters = logic.getParameterNode()
        parameters.inputVolume, parameters.prompt, parameters.pseudoHealthy = volume, "liver tumor", True
        self.runToDone(logic, parameters)
        self.assertIsNotNone(stub.requests[0].pseudo_healthy)
        healthy, residual = logic.result.overlays["Pseudo-healthy (fade)"], logic.result.overlays["Residual"]
        self.assertTrue(np.all(slicer.util.arrayFromVolume(healthy)[LESION_1] == REPAINTED))
        self.assertEqual(float(slicer.util.arrayFromVolume(residual).max()), np.float32(0.8))
        healthyMatrix, volumeMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        healthy.GetIJKToRASMatrix(healthyMatrix)
        volume.GetIJKToRASMatrix(volumeMatrix)
        self.assertEqual([healthyMatrix.GetElement(r, c) for r in range(4) for c in range(4)],
                         [volumeMatrix.GetElement(r, c) for r in range(4) for c in range(4)])
        self.assertEqual(healthy.GetDisplayNode().GetWindow(), volume.GetDisplayNode().GetWindow())
        logic.result.show_overlay("Pseudo-healthy (fade)", 0.7)
        composites = slicer.mrmlScene.GetNodesByClass("vtkMRMLSliceCompositeNode")
        self.assertGreater(composites.GetNumberOfItems(), 0)
        for i in range(composites.GetNumberOfItems()):
            composite = composites.GetItemAsObject(i)
            self.assertEqual((composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()),
                             (volume.GetID(), healthy.GetID()))
            self.assertAlmostEqual(composite.GetForegroundOpacity(), 0.7)
        ids = list(logic.result.segment_ids)
        logic.result.apply_threshold(0.7)  # would drop lesion 2 of a plain prompt result; not of a refined one
        self.assertEqual(logic.result.segment_ids, ids)

    def test_cancel_and_wrong_input(self):
        from ZeroShotDiffusionSeg import ZeroShotDiffusionSegLogic
        from ZeroShotDiffusionSegLib.errors import UserError

        stub = StubRunner()
        logic = ZeroShotDiffusionSegLogic(runnerFactory=lambda settings: stub)
        parameters = logic.getParameterNode()
        labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        labelmap.SetAndObserveImageData(vtk.vtkImageData())
        labelmap.GetImageData().SetDimensions(8, 8, 8)
        labelmap.GetImageData().AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        parameters.prompt = "lesion"
        with self.assertRaises(UserError):
            logic.start(parameters, logic.settingsFrom(parameters))  # no input volume
        parameters.inputVolume = labelmap
        with self.assertRaisesRegex(UserError, "labelmap"):
            logic.start(parameters, logic.settingsFrom(parameters))
        self.assertEqual(stub.requests, [])
        volume = self.makeObliqueVolume()
        parameters.inputVolume = volume
        logic.start(parameters, logic.settingsFrom(parameters))
        self.assertTrue(logic.busy)
        logic.cancel()
        self.assertFalse(logic.busy)
        self.assertIn("cancelled", [e.kind for e in logic.poll()])


if __name__ == "__main__":
    unittest.main()
