"""Results as DICOM Segmentation objects (highdicom), frame for frame on the source series.

The label volume's k axis is the series' files in GDCM's slice order (the order SimpleITK read
them in), so frame k of the segmentation references exactly the source instance volume slice k
came from; highdicom copies the geometry (position, orientation, spacing, Frame of Reference) from
those instances. Segments carry the terminology the Slicer module gives its segments
(slicer/terminology.py): Morphologically Altered Structure / Neoplasm, plus the anatomic region of the organ
the prompt names (prompt_words.anatomic_region).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from .. import __version__
from ..prompt_words import anatomic_region
from ..slicer import terminology

RESEARCH_STATEMENT = "RESEARCH OUTPUT - NOT FOR CLINICAL USE"
LONG_STATEMENT = ("Research output of zsdseg (zero-shot segmentation from the attention of a frozen Stable Diffusion "
                  "model). Not validated for clinical use; review every segment before relying on it.")


def _concept(code: terminology.Code):
    from highdicom.sr import CodedConcept

    scheme, value, meaning = code
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _fit(text: str, limit: int = 64) -> str:
    """DICOM LO values hold at most 64 characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def algorithm_identification(model_id: str, prompt: Optional[str], random_weights: bool):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    parameters = {"model": _fit(model_id), "random_weights": str(bool(random_weights)).lower()}
    if prompt:
        parameters["prompt"] = _fit(prompt)
    return hd.AlgorithmIdentificationSequence(name="zsdseg", family=codes.cid7162.ArtificialIntelligence,
                                              version=__version__, parameters=parameters)


def segment_descriptions(labels: Sequence[str], prompt: Optional[str], algorithm) -> list:
    import highdicom as hd

    region = anatomic_region(prompt)
    return [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=_fit(label),
            segmented_property_category=_concept(terminology.MORPHOLOGICALLY_ALTERED_STRUCTURE),
            segmented_property_type=_concept(terminology.NEOPLASM),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            anatomic_regions=[_concept(region)] if region else None,
        )
        for number, label in enumerate(labels, start=1)
    ]


def read_source_series(files: Sequence[str]) -> list:
    import pydicom

    return [pydicom.dcmread(path) for path in files]


def build_segmentation(sources: list, pixels: np.ndarray, *, mode: str, prompt: Optional[str], model_id: str,
                       random_weights: bool, fractional: bool = False):
    """A highdicom Segmentation of ``pixels`` ((k, j, i) as read, k = source file order).

    Binary: a label map, value n = segment n (one segment per lesion, or one for a 0/1 map).
    Fractional: one segment, the score in [0, 1] as a probability.
    """
    import highdicom as hd

    if pixels.shape[0] != len(sources):
        raise ValueError(f"{pixels.shape[0]} slices for {len(sources)} source instances")
    algorithm = algorithm_identification(model_id, prompt, random_weights)
    base = terminology.base_segment_name(mode, prompt)
    if fractional:
        labels: List[str] = [f"{base} score"]
        pixel_array = np.clip(pixels.astype(np.float32), 0.0, 1.0)
    else:
        count = int(pixels.max())
        labels = terminology.segment_names(base, max(count, 1))
        pixel_array = pixels.astype(np.uint16 if count > 255 else np.uint8)
    description = _fit(f"zsdseg {'score ' if fractional else ''}{terminology.normalize_prompt(prompt) or mode}")
    segmentation = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(labels, prompt, algorithm),
        series_instance_uid=hd.UID(), series_number=9000 + int(fractional), sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="zsdseg", manufacturer_model_name="ZeroShotDiffusionSeg", software_versions=__version__,
        device_serial_number="none", series_description=description, content_description=RESEARCH_STATEMENT[:64],
        content_label="ZSDSEG", omit_empty_frames=bool(pixel_array.any()),
    )
    segmentation.ImageComments = LONG_STATEMENT + (" Random model weights: meaningless output." if random_weights else "")
    return segmentation


def write_segmentation(segmentation, path: Path) -> Path:
    """Written beside its final name, then renamed: never half a file."""
    import os

    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        segmentation.save_as(str(partial))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
