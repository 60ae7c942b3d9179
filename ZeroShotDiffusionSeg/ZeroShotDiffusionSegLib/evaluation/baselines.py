"""Weight-free yardsticks, run on the same cases with the same seed as the deployed selection:

* ``otsu``: Otsu's threshold on intensity, then the connected component under the seed of
  whichever side of the threshold the seed falls on;
* ``kmeans``: k-means on intensity (k clusters), then the connected component under the seed
  within the seed's cluster;
* ``whole_image``: every pixel is lesion (needs no seed), to show how much of a Dice the lesion's
  size alone buys.

Colour images are reduced to their channel mean; volumes are handled in 3-D with face
connectivity. Both are deterministic (fixed k-means seed, fixed subsample).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from ..otsu import otsu_threshold

KMEANS_CLUSTERS = 3
KMEANS_FIT_SAMPLES = 20000  # a k-means fit on a subsample is as good for 1-D intensity and ~100x faster on a CT
RANDOM_STATE = 0


def intensity(image: np.ndarray, is_volume: bool = False) -> np.ndarray:
    """Grey intensity: colour (H, W, 3) images become the mean of their channels."""
    image = np.asarray(image, dtype=np.float64)
    if not is_volume and image.ndim == 3:
        return image.mean(axis=2)
    return image


def component_under_seed(classes: np.ndarray, seed_index: Sequence[int]) -> np.ndarray:
    """The face-connected component of the seed's class that contains the seed."""
    seed_index = tuple(int(i) for i in seed_index)
    same_class = classes == classes[seed_index]
    components, _ = ndimage.label(same_class)
    return components == components[seed_index]


def otsu_seed(image: np.ndarray, seed_index: Sequence[int], is_volume: bool = False) -> np.ndarray:
    grey = intensity(image, is_volume)
    return component_under_seed(grey > otsu_threshold(grey), seed_index)


def kmeans_classes(grey: np.ndarray, clusters: int = KMEANS_CLUSTERS) -> np.ndarray:
    """Cluster index per voxel from k-means on intensity, fitted on a fixed subsample."""
    from sklearn.cluster import KMeans

    values = grey.reshape(-1, 1)
    rng = np.random.default_rng(RANDOM_STATE)
    sample = values if values.shape[0] <= KMEANS_FIT_SAMPLES else values[rng.choice(values.shape[0], KMEANS_FIT_SAMPLES, replace=False)]
    clusters = max(1, min(clusters, int(np.unique(sample).size)))
    model = KMeans(n_clusters=clusters, n_init=4, random_state=RANDOM_STATE).fit(sample)
    return model.predict(values).reshape(grey.shape)


def kmeans_seed(image: np.ndarray, seed_index: Sequence[int], is_volume: bool = False, clusters: int = KMEANS_CLUSTERS) -> np.ndarray:
    return component_under_seed(kmeans_classes(intensity(image, is_volume), clusters), seed_index)


def whole_image(image: np.ndarray, seed_index: Sequence[int], is_volume: bool = False) -> np.ndarray:
    """Everything is lesion: the floor any method must beat. On sets whose lesions fill most of
    the image (PH² melanomas: about two thirds) this alone scores a high Dice."""
    return np.ones(image.shape if is_volume else image.shape[:2], dtype=bool)


BASELINES = {"otsu": otsu_seed, "kmeans": kmeans_seed, "whole_image": whole_image}
