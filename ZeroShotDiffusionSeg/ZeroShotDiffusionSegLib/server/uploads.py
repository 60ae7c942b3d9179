"""Checking an uploaded volume before it is queued, so a bad file is a 4xx answer at
upload time rather than a failed job minutes later -- and so that an upload can never
make the server read anything but the upload itself."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import UserError
from ..volume.headers import NOT_AN_IMAGE, inspect_upload
from ..volume.request import VolumeRequest

# Decoded voxel data may take at most this many bytes per voxel of --max-voxels: the float32
# copy the pipeline makes of a volume of the largest accepted size.
BYTES_PER_ACCEPTED_VOXEL = 4
# The ITK reader for each upload extension: ITK would otherwise pick one by the file's content.
IMAGE_IOS = {".nrrd": "NrrdImageIO", ".mha": "MetaImageIO", ".nii": "NiftiImageIO", ".nii.gz": "NiftiImageIO"}


def validate_upload(path: Path, out_dir: Path, request: VolumeRequest, max_voxels: int, extension: str = None,
                    max_healthy_steps: Optional[int] = None) -> None:
    """Raise UserError unless the job would start: the request and the upload are within the server's
    limits, the upload is a self-contained volume, and the volume pipeline's ``check_request`` accepts
    it with this request.

    In this order, each before the next can cost anything: the header is read here in plain Python
    (``inspect_upload``: a header naming a data file elsewhere is refused before ITK opens the file;
    the declared voxel count and decoded bytes are checked before any voxel is decompressed); then
    ITK reads it with the reader of its extension only. Messages never carry the server's paths,
    ITK's own words (which may quote sizes of files) or voxel values.
    """
    from ..volume import io
    from ..volume.pipeline import check_request

    healthy = request.pseudo_healthy
    if healthy is not None and max_healthy_steps is not None and healthy.denoising_steps > max_healthy_steps:
        raise UserError(f"pseudo_healthy would run {healthy.denoising_steps} denoising steps per slice "
                        f"(steps x strength); this server runs at most {max_healthy_steps} (--max-healthy-steps)")
    extension = extension or next((e for e in IMAGE_IOS if path.name.lower().endswith(e)), "")
    declared = inspect_upload(path, extension)
    size = " x ".join(map(str, declared.size))
    if declared.voxels > max_voxels:
        raise UserError(f"the volume has {declared.voxels} voxels ({size}); this server accepts at most {max_voxels} (--max-voxels)")
    byte_limit = BYTES_PER_ACCEPTED_VOXEL * max_voxels
    if declared.data_bytes > byte_limit:
        raise UserError(f"the volume's voxel data would take {declared.data_bytes} bytes decoded ({size} voxels of "
                        f"{declared.voxel_bytes} bytes); this server accepts at most {byte_limit} "
                        f"({BYTES_PER_ACCEPTED_VOXEL} bytes x --max-voxels)")
    try:
        image = io.read_volume(path, image_io=IMAGE_IOS[extension], name="the uploaded volume")
    except io.UnreadableImage:
        raise UserError(NOT_AN_IMAGE) from None
    try:
        check_request(path, out_dir, request, image=image)
    except UserError as error:
        message = str(error).replace(str(out_dir), "the output folder").replace(str(path), "the uploaded volume")
        raise UserError(message) from None
