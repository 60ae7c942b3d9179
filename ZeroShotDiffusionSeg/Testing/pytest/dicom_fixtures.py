"""Shared helper of the DICOM tests (no tests here): a synthetic CT series written as single-frame files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def write_ct_series(image: sitk.Image, folder: Path, description: str = "synthetic CT", study_uid=None,
                    shuffle_seed: int = 7) -> list:
    """One CT Image Storage file per k slice of ``image`` (any orientation and spacing), in a shuffled
    file-name order so a reader must sort by position. Returns the SOP Instance UIDs in k order."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    array = sitk.GetArrayFromImage(image).astype(np.int16)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    order = list(range(array.shape[0]))
    random.Random(shuffle_seed).shuffle(order)
    uids = [generate_uid() for _ in order]
    for file_number, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, uids[k]
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uids[k]
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Synthetic^Phantom", "PHANTOM1", "", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "20260101", "120000", "", "", "1"
        ds.Modality, ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = "CT", description, 3, k + 1
        ds.Manufacturer = "test"
        ds.ImagePositionPatient = [float(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [float(v) for v in list(direction[:, 0]) + list(direction[:, 1])]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # (between rows, between columns)
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.PixelData = array[k].tobytes()
        ds.save_as(str(folder / f"IM{series_uid[-6:]}_{file_number:04d}.dcm"), enforce_file_format=True)
    return uids
