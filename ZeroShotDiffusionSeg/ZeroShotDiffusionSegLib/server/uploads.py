"""Checking an uploaded volume before it is queued, so a bad file is a 4xx answer at
upload time rather than a failed job minutes later."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

from ..errors import UserError
from ..volume.request import VolumeRequest

NOT_AN_IMAGE = "the upload is not a readable NRRD/NIfTI/MHA volume (or it is truncated)"


def validate_upload(path: Path, out_dir: Path, request: VolumeRequest, max_voxels: int) -> None:
    """Raise UserError unless the job would start: the upload is a volume within the server's
    limits, and the volume pipeline's ``check_request`` accepts it with this request.

    The header is read first, so a file that claims a huge size (a decompression bomb) is
    refused before any voxel is decompressed. Messages never show the server's paths.
    """
    import SimpleITK as sitk

    from ..volume.pipeline import check_request

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise UserError(NOT_AN_IMAGE) from None
    size = reader.GetSize()
    voxels = 1
    for extent in size:
        voxels *= int(extent)
    if voxels > max_voxels:
        raise UserError(f"the volume has {voxels} voxels ({' x '.join(map(str, size))}); this server accepts at most {max_voxels}")
    if str(path).lower().endswith((".nii", ".nii.gz")) and not nifti_data_is_complete(path):
        raise UserError(NOT_AN_IMAGE)
    try:
        check_request(path, out_dir, request)
    except UserError as error:
        message = str(error).replace(str(out_dir), "the output folder").replace(str(path), "the uploaded volume")
        raise UserError(message) from None


def nifti_data_is_complete(path: Path) -> bool:
    """Whether a NIfTI-1/-2 file (gzip or not) holds all the voxel bytes its header promises.

    ITK's NIfTI reader silently fills a truncated file's missing voxels (tested with
    SimpleITK 2.5), while its NRRD and MetaImage readers raise; so this is checked here.
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
