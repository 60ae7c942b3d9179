"""Checking an uploaded volume before it is queued, so a bad file is a 4xx answer at
upload time rather than a failed job minutes later."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError

NOT_AN_IMAGE = "the upload is not a readable NRRD/NIfTI/MHA volume (or it is truncated)"


def validate_volume_file(path: Path, max_voxels: int) -> None:
    """Raise UserError unless ``path`` is a volume the pipeline can run on.

    The header is read first, so a file that claims a huge size (a decompression bomb)
    is refused before any voxel is decompressed. SimpleITK's own messages are not
    passed on: they name the server's temporary path.
    """
    import SimpleITK as sitk

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
        image = reader.Execute()
    except RuntimeError:
        raise UserError(NOT_AN_IMAGE) from None
    _check_content(image)


def _check_content(image) -> None:
    """The volume pipeline's own input checks (4-D, vector, NaN, constant...) on the decoded image."""
    from ..volume.io import validate_volume

    validate_volume(image, "the uploaded volume")
