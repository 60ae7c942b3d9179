"""DICOM SEG out: frame-exact on an oblique, anisotropic, shuffled synthetic CT series; series choice in a folder."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_fixtures import write_ct_series
from test_volume_fixtures import sphere_volume
from ZeroShotDiffusionSegLib.cli import main

hd = pytest.importorskip("highdicom")


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory):
    image, _ = sphere_volume(size=(40, 36, 6), spacing=(0.7, 0.9, 2.5), centre_index=(20, 18, 3), radius_mm=6,
                             noise_hu=10)
    folder = tmp_path_factory.mktemp("ct")
    uids = write_ct_series(image, folder, description="chest CT")
    return folder, uids, image


def run_segment(*argv):
    return main(["segment", *[str(a) for a in argv], "--model", "random:tiny", "--device", "cpu", "--progress", "none"])


def test_seg_frames_land_on_the_source_frames(ct_series, tmp_path):
    folder, uids, image = ct_series
    out = tmp_path / "out"
    assert run_segment(folder, "--prompt", "lung tumor", "--out-dir", out, "--dicom-seg", "--dicom-seg-score") == 0
    labels_image = sitk.ReadImage(str(out / "labels.nrrd"))
    np.testing.assert_allclose(labels_image.GetDirection(), image.GetDirection(), atol=1e-6)  # read oblique
    labels = sitk.GetArrayFromImage(labels_image)
    assert labels.max() >= 1

    seg = hd.seg.segread(str(out / "seg.dcm"))
    sources = {uid: k for k, uid in enumerate(uids)}
    assert seg.SegmentationType == "BINARY" and seg.number_of_segments == int(labels.max())
    first = next(iter(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))))
    import pydicom

    source = pydicom.dcmread(first)
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(uids)
    # every stored frame: its source instance, its position, and its pixels equal labels.nrrd's slice
    for frame_number, frame in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = sources[uid]
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose([float(v) for v in position], image.TransformIndexToPhysicalPoint((0, 0, k)), atol=1e-4)
    read_back = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True,
                                                  skip_overlap_checks=True)
    np.testing.assert_array_equal(read_back, labels)

    segment = seg.SegmentSequence[0]
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert segment.SegmentAlgorithmType == "AUTOMATIC" and segment.SegmentAlgorithmName == "zsdseg"
    assert segment.AnatomicRegionSequence[0].CodeMeaning.lower() == "lung"
    assert "lung tumor" in seg.SeriesDescription and "NOT FOR CLINICAL USE" in seg.ContentDescription
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert "random:tiny" in algorithm.AlgorithmParameters and "lung tumor" in algorithm.AlgorithmParameters

    score = hd.seg.segread(str(out / "seg-score.dcm"))
    assert score.SegmentationType == "FRACTIONAL"
    fractions = score.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])[..., 0]
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "score.nrrd")))
    np.testing.assert_allclose(fractions, np.round(expected * 255) / 255, atol=1 / 255 + 1e-6)


def test_several_series_are_listed_and_one_is_picked(ct_series, tmp_path, capsys):
    _, _, image = ct_series
    folder = tmp_path / "two"
    write_ct_series(image, folder, description="arterial phase")
    write_ct_series(image, folder, description="venous phase")
    out = tmp_path / "out"
    assert run_segment(folder, "--prompt", "liver tumor", "--out-dir", out, "--dicom-seg") == 2
    error = capsys.readouterr().err
    assert "holds 2 DICOM series, pick one with --series-uid" in error
    assert '"arterial phase"' in error and '"venous phase"' in error and error.count("\n") == 1
    import pydicom

    series_uid = pydicom.dcmread(str(next(folder.iterdir()))).SeriesInstanceUID
    assert run_segment(folder, "--prompt", "liver tumor", "--out-dir", out, "--dicom-seg", "--series-uid", series_uid) == 0
    seg = hd.seg.segread(str(out / "seg.dcm"))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    assert json.loads((out / "provenance.json").read_text())["request"]["series_uid"] == series_uid
    assert run_segment(folder, "--prompt", "x", "--out-dir", tmp_path / "o2", "--series-uid", "1.2.3") == 2
    assert "has no DICOM series 1.2.3" in capsys.readouterr().err


def test_dicom_seg_needs_a_dicom_folder_and_refuses_before_loading(ct_series, tmp_path, capsys):
    _, _, image = ct_series
    path = tmp_path / "v.nrrd"
    sitk.WriteImage(image, str(path))
    assert main(["segment", str(path), "--prompt", "x", "--out-dir", str(tmp_path / "o"), "--dicom-seg",
                 "--model", "no/such-model"]) == 2
    assert "needs a DICOM series folder" in capsys.readouterr().err


def test_batch_writes_seg_per_dicom_case_and_redoes_a_case_missing_it(ct_series, tmp_path):
    import csv
    import shutil

    folder, uids, image = ct_series
    cohort = tmp_path / "cohort"
    shutil.copytree(folder, cohort / "ct1")
    sitk.WriteImage(image, str(cohort / "plain.nrrd"))
    out = tmp_path / "out"

    def statuses():
        assert main(["batch", str(cohort), "--out-dir", str(out), "--prompt", "lung tumor", "--dicom-seg",
                     "--model", "random:tiny", "--device", "cpu", "--progress", "none"]) == 1
        with open(out / "batch.csv", newline="") as handle:
            return {row["case_id"]: (row["status"], row["error"]) for row in csv.DictReader(handle)}

    # batch.csv escapes a cell a spreadsheet would read as a formula (one starting with "-") with a leading "'".
    assert statuses() == {"ct1": ("done", ""), "plain": ("failed", f"'--dicom-seg needs a DICOM series folder as input; "
                                                                  f"{cohort / 'plain.nrrd'} is a file")}
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "ct1" / "labels.nrrd")))
    seg = hd.seg.segread(str(out / "ct1" / "seg.dcm"))
    np.testing.assert_array_equal(seg.get_pixels_by_source_instance(uids, combine_segments=True), labels)
    assert statuses()["ct1"] == ("skipped", "")
    (out / "ct1" / "seg.dcm").unlink()  # interrupted between the volume outputs and the DICOM SEG
    assert statuses()["ct1"] == ("done", "") and (out / "ct1" / "seg.dcm").is_file()


def test_dicom_options_are_refused_with_a_server(ct_series, tmp_path, capsys):
    folder, _, _ = ct_series
    assert main(["segment", str(folder), "--prompt", "x", "--out-dir", str(tmp_path / "o"), "--dicom-seg",
                 "--series-uid", "1.2.3", "--server", "http://127.0.0.1:9"]) == 2
    error = capsys.readouterr().err
    assert "--dicom-seg, --series-uid work with a local run only, not with --server" in error and error.count("\n") == 1
