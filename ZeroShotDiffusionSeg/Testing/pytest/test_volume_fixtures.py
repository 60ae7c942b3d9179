"""Shared helpers of the volume tests (no tests here): synthetic volumes and a thresholding stub engine.

The stub stands in for the diffusion engine so the tests check geometry and consolidation exactly:
its segments are "bright" (grey value above a threshold) and "the rest", and its score for a pixel
is the mean grey value of the pixel's segment, an absolute scale like the real engine's score_map.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ZeroShotDiffusionSegLib.engine.types import ImageResult, SegmentationParams

SIZE = (48, 40, 12)  # i, j, k
SPACING = (0.8, 0.9, 2.5)
ORIGIN = (-12.3, 45.6, -78.9)
SPHERE_RADIUS_MM = 7.0
BODY_HU, SPHERE_HU, AIR_HU = 40.0, 200.0, -1000.0


def oblique_direction(degrees_z: float = 20.0, degrees_x: float = 10.0) -> tuple:
    """A proper rotation (rotate about z, then about x), flattened row-major as ITK wants it."""
    a, b = math.radians(degrees_z), math.radians(degrees_x)
    about_z = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple((about_x @ about_z).reshape(-1))


def voxel_centres_lps(image: sitk.Image) -> np.ndarray:
    """(k, j, i, 3) LPS coordinates of every voxel centre."""
    k, j, i = np.indices(image.GetSize()[::-1])
    index = np.stack([i, j, k], axis=-1).astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.array(image.GetOrigin()) + (index * np.array(image.GetSpacing())) @ direction.T


def blank_image(size=SIZE, spacing=SPACING, origin=ORIGIN, direction=None) -> sitk.Image:
    image = sitk.Image([int(v) for v in size], sitk.sitkInt16)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction if direction is not None else oblique_direction())
    return image


def sphere_volume(centre_index=(24, 20, 6), radius_mm=SPHERE_RADIUS_MM, air_slices: Sequence[int] = (),
                  noise_hu: float = 0.0, more_spheres: Sequence[tuple] = (), **geometry):
    """(CT-like int16 image: body 40 HU with 200 HU spheres, expected sphere mask in (k, j, i) order).

    ``more_spheres``: further (centre_index, radius_mm) pairs. ``air_slices``: k indices set to air
    (-1000 HU), i.e. slices without body. ``noise_hu``: uniform noise on the body, so that slices
    without a sphere are not constant (constant slices are skipped).
    """
    image = blank_image(**geometry)
    centres = voxel_centres_lps(image)
    sphere = np.zeros(centres.shape[:3], dtype=bool)
    for centre_voxel, radius in [(centre_index, radius_mm), *more_spheres]:
        centre = np.array(image.TransformIndexToPhysicalPoint([int(v) for v in centre_voxel]))
        sphere |= np.linalg.norm(centres - centre, axis=-1) <= radius
    body = BODY_HU + np.random.default_rng(0).uniform(-noise_hu, noise_hu, size=sphere.shape)
    array = np.where(sphere, SPHERE_HU, body).astype(np.int16)
    for k in air_slices:
        array[k] = AIR_HU
        sphere[k] = False
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result, sphere


def write(image: sitk.Image, path) -> str:
    sitk.WriteImage(image, str(path), True)
    return str(path)


class ThresholdSegmenter:
    """Segmenter protocol stand-in: segment 1 = pixels brighter than ``threshold``, segment 0 = the rest."""

    model_id = "stub:threshold"

    def __init__(self, threshold: float = 0.7, fail_above: Optional[int] = None, on_call=None):
        self.threshold = threshold
        self.fail_above = fail_above  # batches larger than this raise an out-of-memory error
        self.on_call = on_call
        self.batch_sizes: List[int] = []

    def segment_batch(self, images, prompt=None, seeds=None, params=SegmentationParams()):
        if self.on_call is not None:
            self.on_call(len(images))
        if self.fail_above is not None and len(images) > self.fail_above:
            raise MemoryError("stub: out of memory")
        self.batch_sizes.append(len(images))
        results = []
        for image in images:
            assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0
            labels = (image > self.threshold).astype(np.int64)
            means = np.array([image[labels == s].mean() if np.any(labels == s) else 0.0 for s in (0, 1)], np.float32)
            score_map = means[labels]
            soft = score_map / score_map.max()
            results.append(ImageResult(labels=labels, prompt_map=image.copy(), score_map=score_map, soft=soft,
                                       mask=soft >= params.selection_threshold, timings={"stub": 0.001}))
        return results

    def provenance(self) -> dict:
        return {"model_id": self.model_id, "threshold": self.threshold}
