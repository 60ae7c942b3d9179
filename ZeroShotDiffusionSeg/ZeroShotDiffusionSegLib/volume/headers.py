"""Reading an uploaded volume's header ourselves, before ITK opens the file.

An NRRD or MetaImage header may name a data file anywhere on the disk (``data file:``,
``ElementDataFile =``); ITK follows it. A volume that came from someone else must be
self-contained, and its declared size must be within limits before any voxel is decompressed.
``inspect_upload`` checks both from the header alone, in plain Python, and knows the format
from the file's content, never from a name: a ``.nii`` that is really an NRRD is refused.

Messages name only what the client sent (its header's fields), never a path or a byte of
another file.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..errors import UserError

MAX_HEADER_BYTES = 64 * 1024  # a text header is a few hundred bytes; longer is not a volume we take
NOT_AN_IMAGE = "the upload is not a readable NRRD/NIfTI/MHA volume (or it is truncated)"

# Bytes per component of each pixel type, by the names the two text formats use.
_NRRD_TYPE_BYTES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
                     "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t",
                     "double"), 8),
}
_MET_TYPE_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
                   "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


@dataclass(frozen=True)
class DeclaredVolume:
    """What a header promises: the format, the grid size (i, j, k, ...) and the decoded bytes of the voxels."""

    format: str  # "NRRD", "MetaImage" or "NIfTI"
    size: Tuple[int, ...]
    voxel_bytes: int  # bytes per voxel, all components

    @property
    def voxels(self) -> int:
        count = 1
        for extent in self.size:
            count *= extent
        return count

    @property
    def data_bytes(self) -> int:
        return self.voxels * self.voxel_bytes


def _key(name: str) -> str:
    """A header key compared the way the most lenient reader would: no case, no spaces."""
    return re.sub(r"\s+", "", name).lower()


def _text_fields(text: str, separators: str) -> Dict[str, str]:
    """key -> value of a text header's lines; a key named twice keeps its first value."""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(rf"([^{separators}]*)[{separators}]=?(.*)", line)
        if match:
            fields.setdefault(_key(match.group(1)), match.group(2).strip())
    return fields


def _refuse_data_file_fields(fields: Dict[str, str], allowed_value: Optional[str]) -> None:
    """Any key containing 'datafile' (NRRD's 'data file'/'datafile', MetaImage's 'ElementDataFile', in any
    case or spacing) must be absent, or equal ``allowed_value`` (MetaImage's LOCAL)."""
    for key, value in fields.items():
        if "datafile" in key and (allowed_value is None or value.strip().upper() != allowed_value):
            raise UserError("the upload's header names a separate data file; the server takes only self-contained "
                            "volumes (NRRD with attached data, MetaImage with ElementDataFile = LOCAL, NIfTI .nii)")


def _integers(text: str) -> Tuple[int, ...]:
    """Positive whole numbers separated by spaces, or a UserError."""
    try:
        values = tuple(int(part) for part in text.split())
    except ValueError:
        raise UserError(NOT_AN_IMAGE) from None
    if not values or any(value < 1 for value in values):
        raise UserError(NOT_AN_IMAGE)
    return values


def _nrrd(head: bytes) -> DeclaredVolume:
    end = re.search(rb"\r?\n\r?\n", head)
    if end is None and len(head) >= MAX_HEADER_BYTES:
        raise UserError(NOT_AN_IMAGE)
    fields = _text_fields((head[: end.start()] if end else head).decode("latin-1"), ":")
    _refuse_data_file_fields(fields, None)
    size = _integers(fields.get("sizes", ""))
    voxel_bytes = _NRRD_TYPE_BYTES.get(" ".join(fields.get("type", "").lower().split()))
    if voxel_bytes is None:
        raise UserError(NOT_AN_IMAGE)
    return DeclaredVolume("NRRD", size, voxel_bytes)


def _metaimage(head: bytes) -> DeclaredVolume:
    text = head.decode("latin-1")
    # The header ends with its ElementDataFile line; what follows is voxel data, not fields.
    last = re.search(r"^[^=:\n]*d\s*a\s*t\s*a\s*f\s*i\s*l\s*e[^=:\n]*[=:].*$", text, re.IGNORECASE | re.MULTILINE)
    fields = _text_fields(text[: last.end()] if last else text, "=:")
    _refuse_data_file_fields(fields, "LOCAL")
    if not any("datafile" in key for key in fields) or "ndims" not in fields:
        raise UserError(NOT_AN_IMAGE)
    size = _integers(fields.get("dimsize", ""))
    component_bytes = _MET_TYPE_BYTES.get(fields.get("elementtype", "").strip().upper())
    if component_bytes is None:
        raise UserError(NOT_AN_IMAGE)
    channels = _integers(fields.get("elementnumberofchannels", "1"))[0]
    return DeclaredVolume("MetaImage", size, component_bytes * channels)


def _nifti(head: bytes) -> DeclaredVolume:
    for order in ("<", ">"):
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            magic = head[344:348]
            dims = struct.unpack(order + "8h", head[40:56])
            bitpix = struct.unpack(order + "h", head[72:74])[0]
            break
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            magic = head[4:12][:4]
            dims = struct.unpack(order + "8q", head[16:80])
            bitpix = struct.unpack(order + "h", head[14:16])[0]
            break
    else:
        raise UserError(NOT_AN_IMAGE)
    if magic[:3] not in (b"n+1", b"n+2"):
        raise UserError("the upload is a NIfTI header without its image (a .hdr/.img pair); upload a single-file .nii or .nii.gz")
    if not 1 <= dims[0] <= 7 or bitpix <= 0 or bitpix % 8:
        raise UserError(NOT_AN_IMAGE)
    size = tuple(int(extent) for extent in dims[1 : dims[0] + 1])
    if any(extent < 1 for extent in size):
        raise UserError(NOT_AN_IMAGE)
    return DeclaredVolume("NIfTI", size, bitpix // 8)


def _head(path: Path, compressed: bool) -> bytes:
    """The first MAX_HEADER_BYTES of the file, decompressed when gzip; a truncated stream gives what it has."""
    try:
        with open(path, "rb") as handle:
            if not compressed:
                return handle.read(MAX_HEADER_BYTES)
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            head = b""
            while len(head) < MAX_HEADER_BYTES:
                chunk = handle.read(64 * 1024)
                if not chunk:
                    break
                head += inflater.decompress(chunk, MAX_HEADER_BYTES - len(head))
            return head
    except (OSError, zlib.error):
        raise UserError(NOT_AN_IMAGE) from None


def inspect_upload(path: Path, extension: str) -> DeclaredVolume:
    """The header of an upload stored as ``input<extension>``, read without ITK and without reading voxels.

    The content must be the format its extension names (.nrrd NRRD, .mha MetaImage, .nii/.nii.gz
    NIfTI); a header naming a separate data file is refused, whatever the case or spacing of its key.
    """
    head = _head(Path(path), extension == ".nii.gz")
    if extension == ".nrrd":
        if not head.startswith(b"NRRD"):
            raise UserError(NOT_AN_IMAGE)
        return _nrrd(head)
    if extension == ".mha":
        if head.startswith(b"NRRD"):
            raise UserError(NOT_AN_IMAGE)
        return _metaimage(head)
    if extension in (".nii", ".nii.gz"):
        return _nifti(head)
    raise UserError(f"unsupported upload type {extension!r}")
