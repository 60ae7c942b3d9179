"""Where the images and their ground-truth masks are in a data set folder, and how to read them.

Every layout turns a folder into a sorted list of ``Case``; ``load_case`` reads one case into a
float image in [0, 1] (2-D) or a volume path (3-D), a boolean truth mask and its spacing.

* ``pairs``: any image with a mask beside it named by ``mask_pattern`` (default
  ``{name}_mask{ext}``; ``{name}`` is the image's stem, ``{ext}`` an image extension, and the
  pattern may hold a relative folder, e.g. ``../masks/{name}.png``).
* ``busi``: BUSI's ``<name>.png`` with masks ``<name>_mask.png``, ``<name>_mask_1.png``... in the
  same folder or a sibling ``mask``/``masks`` folder; the truth is the OR of all of them (the
  standard convention for multifocal cases).
* ``ph2``: PH² case folders holding ``IMDxxx.{bmp,png}`` and ``IMDxxx_lesion.{bmp,png}``, flat or in
  the original ``IMDxxx_Dermoscopic_Image``/``IMDxxx_lesion`` subfolders.
* ``wbc``: Zheng et al. 2018 ``Dataset N/NNN.bmp`` images with ``NNN.png`` ground truth (0 background,
  128 cytoplasm, 255 nucleus); the target is the nucleus (>= 192) or the whole cell (>= 64).
* ``nrrd-pairs``: volumes ``<name>_image<ext>`` with labels ``<name>_label<ext>`` (NRRD, NIfTI, MHA);
  any non-zero label voxel is lesion.

Masks of lossless formats count any non-zero pixel as lesion; JPEG masks are thresholded at
127 because compression rings around the edge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VOLUME_EXTENSIONS = (".nrrd", ".nii.gz", ".nii", ".mha", ".mhd")
LAYOUTS = ("pairs", "busi", "ph2", "wbc", "nrrd-pairs")
WBC_TARGETS = ("nucleus", "cell")
DEFAULT_MASK_PATTERN = "{name}_mask{ext}"
# PIL modes of 16-bit and 32-bit images: read as they are, since convert("L") would clip them.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


@dataclass
class Case:
    name: str
    image_path: Path
    mask_paths: List[Path]
    kind: str = "image"  # "image" (2-D) or "volume" (3-D)
    truth_rule: str = "nonzero"  # "nonzero", "wbc-nucleus" or "wbc-cell"


@dataclass
class LoadedCase:
    case: Case
    truth: np.ndarray  # bool, (H, W) or (Z, Y, X)
    spacing: Optional[Tuple[float, ...]]  # per array axis; None: pixels
    image: Optional[np.ndarray] = None  # float in [0, 1], (H, W) or (H, W, 3); None for volumes
    messages: List[str] = field(default_factory=list)


def _natural_key(path: Path):
    """'malignant (2)' before 'malignant (10)'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


def _files(root: Path, extensions: Sequence[str]) -> List[Path]:
    found = [p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(tuple(extensions))]
    return sorted(found, key=_natural_key)


def _stem(path: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS + VOLUME_EXTENSIONS) -> str:
    lower = path.name.lower()
    for extension in sorted(extensions, key=len, reverse=True):
        if lower.endswith(extension):
            return path.name[: -len(extension)]
    return path.stem


def _unique_names(cases: List[Case], root: Path) -> List[Case]:
    """Stems are the names unless two cases share one (WBC's 'Dataset 1/001' and 'Dataset 2/001')."""
    stems = [case.name for case in cases]
    for case in cases:
        if stems.count(case.name) > 1:
            relative = case.image_path.relative_to(root)
            case.name = str(relative.parent / _stem(relative)) if str(relative.parent) != "." else case.name
    return cases


def _pairs(root: Path, mask_pattern: str) -> List[Case]:
    if "{name}" not in mask_pattern:
        raise UserError(f"mask pattern {mask_pattern!r} must contain {{name}}")
    files = _files(root, IMAGE_EXTENSIONS)
    mask_of = {}
    for path in files:
        extensions = [path.suffix] + [e for e in IMAGE_EXTENSIONS if e != path.suffix.lower()]
        for extension in extensions:
            candidate = (path.parent / mask_pattern.format(name=_stem(path), ext=extension)).resolve()
            if candidate.is_file() and candidate != path.resolve():
                mask_of[path] = candidate
                break
    mask_files = set(mask_of.values())
    return [
        Case(_stem(path), path, [mask_of[path]])
        for path in files
        if path in mask_of and path.resolve() not in mask_files
    ]


_BUSI_MASK = re.compile(r"_mask(_\d+)?$")


def _busi(root: Path) -> List[Case]:
    files = _files(root, IMAGE_EXTENSIONS)
    masks_by_key = {}
    for path in files:
        stem = _stem(path)
        if _BUSI_MASK.search(stem):
            # A mask belongs to the image of the same name in its own folder, or, from a
            # mask/masks folder, to the image in a sibling folder (BUSI's images/ and mask/).
            name = _BUSI_MASK.sub("", stem)
            masks_by_key.setdefault((path.parent, name), []).append(path)
            if path.parent.name.lower() in ("mask", "masks"):
                masks_by_key.setdefault((path.parent.parent, name), []).append(path)
    cases = []
    for path in files:
        stem = _stem(path)
        if _BUSI_MASK.search(stem):
            continue
        masks = masks_by_key.get((path.parent, stem), []) + masks_by_key.get((path.parent.parent, stem), [])
        masks = sorted(set(masks), key=_natural_key)
        if masks:
            cases.append(Case(stem, path, masks))
    return cases


def _ph2(root: Path) -> List[Case]:
    cases = []
    for lesion in _files(root, IMAGE_EXTENSIONS):
        stem = _stem(lesion)
        if not stem.endswith("_lesion"):
            continue
        name = stem[: -len("_lesion")]
        case_dir = lesion.parent.parent if lesion.parent.name.endswith("_lesion") else lesion.parent
        images = [p for p in _files(case_dir, IMAGE_EXTENSIONS) if _stem(p) == name]
        if images:
            cases.append(Case(name, images[0], [lesion]))
    return cases


def _wbc(root: Path, target: str) -> List[Case]:
    if target not in WBC_TARGETS:
        raise UserError(f"WBC target must be one of {', '.join(WBC_TARGETS)}, got {target!r}")
    truths = [p for p in _files(root, (".png",))]
    cases = []
    for truth in truths:
        images = [truth.with_suffix(e) for e in IMAGE_EXTENSIONS if e != ".png" and truth.with_suffix(e).is_file()]
        if images:
            cases.append(Case(_stem(truth), images[0], [truth], truth_rule=f"wbc-{target}"))
    if truths and not cases:
        raise UserError(
            f"WBC layout: {len(truths)} PNG files under {root} but no NNN.bmp image beside any of them; the "
            "original release keeps images as .bmp and ground truth as .png of the same name (a conversion "
            "of the images to .png would have overwritten the ground truth)"
        )
    return cases


def _nrrd_pairs(root: Path, image_suffix: str = "_image", label_suffix: str = "_label") -> List[Case]:
    cases = []
    for path in _files(root, VOLUME_EXTENSIONS):
        stem = _stem(path)
        if not stem.endswith(image_suffix):
            continue
        extension = path.name[len(stem):]
        name = stem[: -len(image_suffix)]
        label = path.with_name(f"{name}{label_suffix}{extension}")
        if label.is_file():
            cases.append(Case(name, path, [label], kind="volume"))
    return cases


def discover(layout: str, root, mask_pattern: str = DEFAULT_MASK_PATTERN, wbc_target: str = "nucleus") -> List[Case]:
    """The cases of a data set folder, in natural order; a UserError if there are none."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data folder not found: {root}")
    if layout == "pairs":
        cases = _pairs(root, mask_pattern)
    elif layout == "busi":
        cases = _busi(root)
    elif layout == "ph2":
        cases = _ph2(root)
    elif layout == "wbc":
        cases = _wbc(root, wbc_target)
    elif layout == "nrrd-pairs":
        cases = _nrrd_pairs(root)
    else:
        raise UserError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if not cases:
        raise UserError(f"no {layout} cases (image with ground truth) found under {root}")
    return _unique_names(cases, root)


def read_image(path: Path) -> np.ndarray:
    """An image as float in [0, 1]: (H, W) for grey, (H, W, 3) for colour (alpha dropped)."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode in _WIDE_MODES:
            array = np.asarray(image, dtype=np.float64)
            low, high = float(array.min()), float(array.max())
            return ((array - low) / (high - low) if high > low else np.zeros_like(array)).astype(np.float32)
        if image.mode in ("1", "L"):
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _read_mask(path: Path, rule: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image if image.mode in _WIDE_MODES else image.convert("L"))
    if rule == "wbc-nucleus":
        return array >= 192  # 255 = nucleus; anti-aliased strays between 128 and 255 split at the midpoint
    if rule == "wbc-cell":
        return array >= 64  # 128 cytoplasm or 255 nucleus
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return array > 127
    return array != 0


def load_case(case: Case) -> LoadedCase:
    """Read a case's truth (and, for 2-D, its image); a UserError when sizes disagree."""
    if case.kind == "volume":
        import SimpleITK as sitk

        label = sitk.ReadImage(str(case.mask_paths[0]))
        truth = sitk.GetArrayFromImage(label) != 0
        spacing = tuple(float(s) for s in label.GetSpacing()[::-1])
        return LoadedCase(case, truth, spacing)
    image = read_image(case.image_path)
    truth = np.zeros(image.shape[:2], dtype=bool)
    for mask_path in case.mask_paths:
        mask = _read_mask(mask_path, case.truth_rule)
        if mask.shape != truth.shape:
            raise UserError(f"{case.name}: mask {mask_path.name} is {mask.shape[1]}x{mask.shape[0]}, image is {truth.shape[1]}x{truth.shape[0]}")
        truth |= mask
    return LoadedCase(case, truth, None, image=image)
