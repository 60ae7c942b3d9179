"""Reading and writing volumes with SimpleITK, and refusing the ones we cannot segment.

Everything here works in ITK's LPS physical space. An output image is always made with
``image_like``, which copies the input's origin, spacing and direction (CopyInformation),
so a mask can never land on other voxels than the ones it was computed from.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
import zlib
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import SimpleITK as sitk

from ..errors import UserError

PathLike = Union[str, Path]

# File name endings SimpleITK reads as (possibly) 3-D images; a folder is read as a DICOM series.
VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


def has_volume_suffix(path: PathLike) -> bool:
    name = str(path).lower()
    return any(name.endswith(suffix) for suffix in VOLUME_SUFFIXES)


def _itk_reason(error: Exception) -> str:
    """The informative part of an ITK exception: its ERROR line without prefixes or object addresses,
    plus the reader's last detail line when the ERROR line only announces one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    error_lines = [line for line in lines if "ERROR" in line]
    if not error_lines:
        return lines[-1] if lines else type(error).__name__
    reason = re.sub(r"^(s?itk::ERROR|ITK ERROR):\s*", "", error_lines[0])
    reason = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", reason)
    if reason.endswith(":") and lines[-1] != error_lines[0]:
        reason += " " + re.sub(r"^\[\w+\]\s*\w+:\s*", "", lines[-1])
    return reason


def _read_dicom_folder(folder: Path, series_uid: Optional[str] = None) -> sitk.Image:
    from ..dicom.series import choose_series

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(choose_series(folder, series_uid))
    return reader.Execute()


class UnreadableImage(UserError):
    """The file could not be read as an image; the message quotes the reader (for a local user only)."""


def _read_file(path: Path, image_io: Optional[str], name: str) -> sitk.Image:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    if image_io:
        reader.SetImageIO(image_io)
    reader.ReadImageInformation()
    # Check the header's spacing before reading: for a negative spacing the NRRD, MetaImage and NIfTI
    # readers silently flip the direction instead, which would hide a broken header.
    if min(reader.GetSpacing()) <= 0:
        raise UserError(f"{name} has zero or negative voxel spacing {reader.GetSpacing()}; every spacing must be positive")
    if str(path).lower().endswith((".nii", ".nii.gz")) and not nifti_data_is_complete(path):
        raise UserError(f"{name} is truncated: its NIfTI header promises more voxel data than the file holds")
    return reader.Execute()


def nifti_data_is_complete(path: Path) -> bool:
    """Whether a NIfTI-1/-2 file (gzip or not) holds all the voxel bytes its header promises.

    ITK's NIfTI reader silently fills a truncated file's missing voxels (tested with
    SimpleITK 2.5), while its NRRD and MetaImage readers raise; so NIfTI is checked here.
    """
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(540)
            need = _nifti_file_bytes(header)
            if need is None:
                return False
            have = len(header)
            while have < need:
                chunk = handle.read(min(1 << 20, need - have))
                if not chunk:
                    return False
                have += len(chunk)
    except (OSError, EOFError, zlib.error):
        return False
    return True


def _nifti_file_bytes(header: bytes):
    """vox_offset + voxel bytes from a NIfTI-1 or NIfTI-2 header, or None if it is neither."""
    for order in ("<", ">"):
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            dims = struct.unpack(order + "8q", header[16:80])
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        return None
    voxels = 1
    for extent in dims[1 : dims[0] + 1]:
        voxels *= max(int(extent), 1)
    return max(offset, 348) + voxels * bitpix // 8


def read_volume(path: PathLike, image_io: Optional[str] = None, name: Optional[str] = None,
                series_uid: Optional[str] = None) -> sitk.Image:
    """Read a 3-D scalar volume (NRRD, NIfTI, MHA/MHD, or a folder with one DICOM series) and validate it.

    ``image_io``: the one ITK reader to use (e.g. "NrrdImageIO"); default: ITK picks by name and content.
    ``name``: how messages call the volume (default: its path). A reader failure is an ``UnreadableImage``.
    ``series_uid``: the series to read from a DICOM folder holding several.
    """
    path = Path(path)
    name = name or str(path)
    if not path.exists():
        raise UserError(f"input not found: {path}")
    try:
        image = _read_dicom_folder(path, series_uid) if path.is_dir() else _read_file(path, image_io, name)
    except RuntimeError as error:
        reason = _itk_reason(error)
        if "spacing" in reason.lower():
            raise UnreadableImage(f"{name} has invalid voxel spacing ({reason}); every spacing must be positive") from None
        raise UnreadableImage(f"{name} is not a readable image ({reason})") from None
    validate_volume(image, name)
    return image


def validate_volume(image: sitk.Image, name: str = "input") -> None:
    """Refuse what the slice-wise pipeline cannot handle, each with one actionable line."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UserError(
            f"{name} is a vector/colour image with {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "give a scalar (grey-value) volume"
        )
    dimension = image.GetDimension()
    if dimension == 4:
        raise UserError(f"{name} is a 4-D image (size {image.GetSize()}); extract one 3-D volume (one time point) first")
    if dimension != 3:
        raise UserError(f"{name} is a {dimension}-D image; the volume pipeline needs a 3-D volume")
    if min(image.GetSize()) < 1 or int(np.prod(image.GetSize())) == 0:
        raise UserError(f"{name} is empty (size {image.GetSize()})")
    if min(image.GetSpacing()) <= 0:
        raise UserError(f"{name} has zero or negative voxel spacing {image.GetSpacing()}; every spacing must be positive")
    array = sitk.GetArrayViewFromImage(image)
    if np.iscomplexobj(array):
        raise UserError(f"{name} has complex-valued voxels; give a real-valued volume")
    if array.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise UserError(f"{name} contains {bad} NaN or infinite voxel values; fix or mask them first")
    low, high = array.min(), array.max()
    if low == high:
        raise UserError(f"{name} is constant (every voxel has the same value); there is nothing to segment")


def volume_array(image: sitk.Image) -> np.ndarray:
    """The voxels as float32 in numpy's (k, j, i) order, a copy the pipeline may modify."""
    return sitk.GetArrayFromImage(image).astype(np.float32, copy=False)


def image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """The inverse of ``volume_array``: a (k, j, i) array back into an image on the reference's exact grid."""
    if tuple(array.shape[::-1]) != tuple(reference.GetSize()):
        raise ValueError(f"array shape {array.shape} does not match the reference size {reference.GetSize()} (i, j, k)")
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def write_image(image: sitk.Image, path: PathLike) -> None:
    # gzip NRRD: small, loads in Slicer, and ITK writes it byte-identically run after run.
    sitk.WriteImage(image, str(path), True)


def _hash_into(digest, file: Path) -> None:
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def input_sha256(path: PathLike) -> str:
    """Checksum of the input: the file (with its data file, for a detached .mhd/.nhdr header), or for a DICOM
    folder every file in name order, names included."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode() + b"\0")
            _hash_into(digest, file)
        return digest.hexdigest()
    _hash_into(digest, path)
    for data_file in detached_data_files(path):
        _hash_into(digest, data_file)
    return digest.hexdigest()


# The header field naming a detached header's voxel file(s): MetaImage and NRRD spell it differently.
_DATA_FILE_KEYS = {".mhd": ("elementdatafile",), ".nhdr": ("data file", "datafile")}


def detached_data_files(header: Path) -> List[Path]:
    """The voxel files a detached .mhd/.nhdr header names (one, or the lines after LIST), relative to the header;
    none for other files. Read from the header, so an unrelated file with the same stem is never included."""
    keys = _DATA_FILE_KEYS.get(header.suffix.lower())
    if not keys:
        return []
    lines = header.read_text(errors="replace").splitlines()
    for position, line in enumerate(lines):
        key, separator, value = line.partition("=" if header.suffix.lower() == ".mhd" else ":")
        if separator and key.strip().lower() in keys:
            value = value.strip()
            names = [n.strip() for n in lines[position + 1:] if n.strip()] if value.upper().startswith("LIST") else [value]
            return [header.parent / name for name in names if "%" not in name and (header.parent / name).is_file()]
    return []
