"""End to end with the real engine (random:tiny, CPU): options -> pipeline -> files Slicer loads.

Random weights say nothing about accuracy; this proves the real engine's results flow through
slicing, volume normalisation and consolidation onto the input's grid, consistently.
"""

import argparse
import json

import numpy as np
import SimpleITK as sitk

from test_volume_fixtures import sphere_volume, write
from ZeroShotDiffusionSegLib import segment_command


def test_tiny_engine_end_to_end_through_the_volume_command(tiny_segmenter, tmp_path, capsys):
    image, _ = sphere_volume(centre_index=(32, 32, 1), size=(64, 64, 3), spacing=(0.7, 0.8, 3.0), radius_mm=8,
                             noise_hu=10, air_slices=(2,))
    path = write(image, tmp_path / "small.nrrd")
    parser = argparse.ArgumentParser()
    segment_command.add_arguments(parser)
    args = parser.parse_args([path, "--prompt", "lung tumor", "--out-dir", str(tmp_path / "out"), "--model", "random:tiny",
                              "--batch-size", "2", "--progress", "json"])
    assert segment_command.run(args, lambda: tiny_segmenter) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["event"] == "done" and lines[-2]["stage"] == "done" and lines[-2]["fraction"] == 1.0

    labels_image = sitk.ReadImage(str(tmp_path / "out" / "labels.nrrd"))
    score_image = sitk.ReadImage(str(tmp_path / "out" / "score.nrrd"))
    stored = sitk.ReadImage(path)
    for output in (labels_image, score_image):  # equal up to the last bit of NRRD's decimal round trip
        assert output.GetSize() == stored.GetSize()
        for get in ("GetSpacing", "GetOrigin", "GetDirection"):
            np.testing.assert_allclose(getattr(output, get)(), getattr(stored, get)(), rtol=0, atol=1e-12)
    labels, score = sitk.GetArrayFromImage(labels_image), sitk.GetArrayFromImage(score_image)
    assert labels.dtype == np.uint16 and score.dtype == np.float32
    assert score.max() == 1.0 and score.min() >= 0.0  # normalised over the volume
    assert not labels[2].any() and not score[2].any()  # the air slice was skipped
    np.testing.assert_array_equal(labels > 0, score >= 0.5)  # the default selection threshold, re-created
    assert set(np.unique(labels)) == set(range(int(labels.max()) + 1))  # lesions 1..K without gaps

    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["segmenter"]["model_id"] == "random:tiny" and provenance["segmenter"]["random_weights"] is True
    assert provenance["intensity"]["name"] == "lung"
    assert provenance["slicing"] == {"axis": "k", "roi_ijk": {"lower": [0, 0, 0], "upper": [63, 63, 2]},
                                     "slices_segmented": 2, "slices_outside_roi": 0, "slices_without_body": 1}
    assert provenance["runtime"]["engine_passes"] == 1 and provenance["runtime"]["engine_timings_s"]["unet"] > 0
    rows = (tmp_path / "out" / "lesions.csv").read_text().splitlines()
    assert len(rows) == 1 + int(labels.max())
    voxel_ml = np.prod(image.GetSpacing()) / 1000
    total_ml = sum(float(row.split(",")[2]) for row in rows[1:])
    assert abs(total_ml - (labels > 0).sum() * voxel_ml) < 1e-4
