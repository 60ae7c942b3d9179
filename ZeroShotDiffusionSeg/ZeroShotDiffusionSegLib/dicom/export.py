"""The ``--dicom-seg`` / ``--dicom-seg-score`` / ``--series-uid`` options of ``segment`` and ``batch``:
checked before the model loads, written after ``run_volume`` has committed its outputs."""

from __future__ import annotations

from pathlib import Path
from typing import List

from ..errors import UserError

SEG_NAME = "seg.dcm"
SCORE_SEG_NAME = "seg-score.dcm"
INSTALL_HINT = "pip install 'zeroshotdiffusionseg[dicom]' (highdicom)"


def add_dicom_seg_arguments(parser) -> None:
    group = parser.add_argument_group("DICOM (input: a DICOM series folder)")
    group.add_argument("--series-uid", help="the Series Instance UID to read when the folder holds several series")
    group.add_argument("--dicom-seg", action="store_true",
                       help=f"also write {SEG_NAME}: a DICOM Segmentation referencing the source series, one segment per lesion")
    group.add_argument("--dicom-seg-score", action="store_true",
                       help=f"also write {SCORE_SEG_NAME}: the score map as a FRACTIONAL DICOM Segmentation")


def dicom_output_names(dicom_seg: bool, dicom_seg_score: bool) -> List[str]:
    return [name for name, wanted in ((SEG_NAME, dicom_seg), (SCORE_SEG_NAME, dicom_seg_score)) if wanted]


def check_dicom_export(input_path, request, dicom_seg: bool, dicom_seg_score: bool) -> None:
    """Everything that would stop the export, found before a slow model load."""
    if not (dicom_seg or dicom_seg_score):
        return
    if not Path(input_path).is_dir():
        raise UserError(f"--dicom-seg needs a DICOM series folder as input; {input_path} is a file")
    if (request.mode or "auto") == "unsupervised":
        raise UserError("--dicom-seg needs prompt or seed mode: unsupervised labels are per-slice regions, not lesions")
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise UserError(f"--dicom-seg needs highdicom: {INSTALL_HINT}") from None


def write_dicom_outputs(input_path, result, request, dicom_seg: bool, dicom_seg_score: bool) -> List[Path]:
    """seg.dcm and/or seg-score.dcm in the result's folder, from the labels/score it has just written."""
    if not (dicom_seg or dicom_seg_score):
        return []
    import json

    import SimpleITK as sitk

    from ..volume.pipeline import resolve_mode
    from .series import choose_series
    from .seg import build_segmentation, read_source_series, write_segmentation

    check_dicom_export(input_path, request, dicom_seg, dicom_seg_score)
    sources = read_source_series(choose_series(Path(input_path), request.series_uid))
    provenance = json.loads(Path(result.files["provenance"]).read_text(encoding="utf-8"))["segmenter"]
    common = dict(mode=resolve_mode(request), prompt=request.prompt, model_id=str(provenance.get("model_id", "")),
                  random_weights=bool(provenance.get("random_weights", False)))
    written = []
    for wanted, key, name, fractional in ((dicom_seg, "labels", SEG_NAME, False),
                                          (dicom_seg_score, "score", SCORE_SEG_NAME, True)):
        if wanted:
            pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(result.files[key])))
            segmentation = build_segmentation(sources, pixels, fractional=fractional, **common)
            written.append(write_segmentation(segmentation, Path(result.out_dir) / name))
            result.files[name] = written[-1]  # listed with the other outputs
    return written


def refuse_remote_dicom(args) -> None:
    """The server returns the four volume outputs only: DICOM options are for a local run."""
    given = [flag for flag, name in (("--dicom-seg", "dicom_seg"), ("--dicom-seg-score", "dicom_seg_score"),
                                     ("--series-uid", "series_uid")) if getattr(args, name, None)]
    if given:
        raise UserError(f"{', '.join(given)} {'works' if len(given) == 1 else 'work'} with a local run only, "
                        "not with --server (the server returns the volume outputs only)")


def check_dicom_args(args, request) -> None:
    check_dicom_export(args.input, request, getattr(args, "dicom_seg", False), getattr(args, "dicom_seg_score", False))


def write_dicom_args(args, result, request) -> List[Path]:
    return write_dicom_outputs(args.input, result, request,
                               getattr(args, "dicom_seg", False), getattr(args, "dicom_seg_score", False))
