"""Which DICOM series of a folder to read: the only one, or the one the user names by its
Series Instance UID. When a folder holds several and none is named, the series are listed with
their descriptions instead of guessing. SimpleITK (GDCM) only: no DICOM extra needed to read."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import SimpleITK as sitk

from ..errors import UserError


def series_files(folder: Path, series_uid: str) -> List[str]:
    """The series' files in GDCM's slice order (the order of the volume's k axis)."""
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))


def describe_series(folder: Path, series_uid: str) -> str:
    """'UID (N files, MODALITY "description")' from the series' first file."""
    files = series_files(folder, series_uid)
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    reader.ReadImageInformation()

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    description = tag("0008|103e") or "no description"
    return f"{series_uid} ({len(files)} files, {tag('0008|0060') or '?'} \"{description}\")"


def choose_series(folder: Path, series_uid: Optional[str] = None) -> List[str]:
    """The files of the folder's one series, or of ``series_uid``; a one-line error listing the series otherwise."""
    folder = Path(folder)
    uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not uids:
        raise UserError(f"{folder} is a folder without a DICOM series; give a volume file or a folder of one DICOM series")
    if series_uid is not None:
        if series_uid not in uids:
            listing = "; ".join(describe_series(folder, uid) for uid in uids)
            raise UserError(f"{folder} has no DICOM series {series_uid}; it holds: {listing}")
        return series_files(folder, series_uid)
    if len(uids) > 1:
        listing = "; ".join(describe_series(folder, uid) for uid in uids)
        raise UserError(f"{folder} holds {len(uids)} DICOM series, pick one with --series-uid: {listing}")
    return series_files(folder, uids[0])
