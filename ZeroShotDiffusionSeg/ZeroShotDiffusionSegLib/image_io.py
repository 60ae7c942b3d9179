"""2-D image files (PNG, JPEG, BMP, TIFF) in and out, with Pillow."""

from __future__ import annotations

import colorsys
import os
import tempfile
from pathlib import Path
from typing import List, Optional

import numpy as np

from .errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# The engine scales every image to 512 x 512; a larger limit would only let a small file that
# decompresses to gigabytes (a decompression bomb) take the memory. 8192 x 8192 pixels.
MAX_IMAGE_PIXELS = 8192 * 8192


def _too_many_pixels(path: Path, pixels) -> UserError:
    count = f"{pixels} pixels" if pixels is not None else "more pixels than Pillow will open"
    return UserError(f"{path} has {count}; at most {MAX_IMAGE_PIXELS} ({MAX_IMAGE_PIXELS // 8192} x 8192) are accepted, "
                     "as a guard against decompression bombs: downscale the image first")


def read_image(path) -> np.ndarray:
    """(H, W) grayscale or (H, W, 3) RGB float32 in [0, 1]; 16-bit and float images are scaled, alpha dropped."""
    import re
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise UserError(f"no such file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below with our own limit
            opened = Image.open(path)
        with opened as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:  # from the header, before decoding
                raise _too_many_pixels(path, image.width * image.height)
            image.load()
            mode = image.mode
            if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBA", "LA", "1"):
                image = image.convert("L" if mode in ("LA", "1") else "RGB")
            array = np.asarray(image)
    except Image.DecompressionBombError as error:  # over Pillow's own hard limit: it gives the count in words only
        found = re.search(r"\((\d+) pixels\)", str(error))
        raise _too_many_pixels(path, int(found.group(1)) if found else None) from None
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"{path} is not an image that can be read (PNG, JPEG, BMP, TIFF): {error}") from None
    if array.ndim not in (2, 3) or array.size == 0:
        raise UserError(f"{path} has an unsupported shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        return (array.astype(np.float32) / float(np.iinfo(array.dtype).max)).astype(np.float32)
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise UserError(f"{path} contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def write_png(path, array: np.ndarray, palette: Optional[List[int]] = None) -> None:
    """Write atomically (temporary file + rename), so an interrupted run never leaves half a PNG.
    ``palette`` (768 values, RGB per index) makes a uint8 array an indexed-colour PNG."""
    from PIL import Image

    path = Path(path)
    if not path.parent.exists():
        raise UserError(f"output folder does not exist: {path.parent}")
    handle, temporary = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        # mkstemp makes the file private (0600); the user's umask decides, as for the volume outputs.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        image = Image.fromarray(array)
        if palette is not None:
            image.putpalette(palette)
        image.save(temporary, format="PNG")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def mask_to_png(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, 255, 0).astype(np.uint8)


def soft_to_png(soft: np.ndarray) -> np.ndarray:
    return np.round(np.clip(soft, 0.0, 1.0) * 255.0).astype(np.uint8)


def labels_to_png(labels: np.ndarray) -> np.ndarray:
    """Segment ids 0..K-1 as pixel values 1..K (uint8 when they fit, else uint16), numbered from 1 as the volume's
    labels.nrrd, so that no region is written as 0 (black, "nothing") and programs can read the ids back."""
    numbered = labels.astype(np.int64) + 1
    return numbered.astype(np.uint8 if numbered.max() < 256 else np.uint16)


def labels_palette() -> List[int]:
    """RGB for indices 0..255: 0 black, then hues a golden angle apart (neighbouring ids look different),
    alternating brightness, so that every region of a label map has its own colour."""
    colours = [(0, 0, 0)]
    for index in range(1, 256):
        hue = (index * 0.618033988749895) % 1.0
        red, green, blue = colorsys.hsv_to_rgb(hue, 0.75 if index % 2 else 0.95, 1.0 if index % 2 else 0.75)
        colours.append((round(red * 255), round(green * 255), round(blue * 255)))
    return [value for colour in colours for value in colour]


def write_labels_png(path, labels: np.ndarray) -> None:
    """Region ids 1..K (``labels_to_png``) as an indexed-colour PNG: a viewer shows each region in its own colour,
    and a program reading the pixel values (``np.asarray(Image.open(path))``) gets the ids. Over 255 regions a
    palette cannot hold them: the ids are written as 16-bit grey levels."""
    numbered = labels_to_png(labels)
    write_png(path, numbered, labels_palette() if numbered.dtype == np.uint8 else None)
