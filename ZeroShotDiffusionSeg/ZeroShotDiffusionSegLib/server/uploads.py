"""Checking an uploaded volume before it is queued, so a bad file is a 4xx answer at
upload time rather than a failed job minutes later."""

from __future__ import annotations

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
    try:
        check_request(path, out_dir, request)
    except UserError as error:
        message = str(error).replace(str(out_dir), "the output folder").replace(str(path), "the uploaded volume")
        raise UserError(message) from None
