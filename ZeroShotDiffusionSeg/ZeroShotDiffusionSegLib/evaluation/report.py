"""What ``zsdseg eval`` writes: results.json (everything, per case and per set) and report.md (the
per-set table a person reads). The overlay PNG per case is drawn by ``overlays``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .statistics import summarize

METRICS = ("dice", "iou", "hd95")
MODE_TITLES = {
    "deployed": "deployed (what a user gets; prompt: anomaly-aware, against the normal prompt)",
    "deployed_plain": "deployed, plain prompt score (--normal-prompt none)",
    "oracle_single": "oracle: best single segment (Hungarian)",
    "oracle_union": "oracle: greedy union of segments",
    "otsu": "baseline: Otsu + component under seed",
    "kmeans": "baseline: k-means + component under seed",
    "whole_image": "floor: whole image as lesion",
}
CONVENTIONS = (
    "Empty masks: both empty -> Dice 1, IoU 1, HD95 0; exactly one empty -> Dice 0, IoU 0, HD95 undefined "
    "(left out of the HD95 statistics and counted as 'undefined'). HD95 = max of the two directed 95th-percentile "
    "surface distances, in mm for volumes and in pixels for 2-D images. Statistics: mean ± sample sd, median, "
    "95% percentile-bootstrap interval of the mean (2000 resamples, seed 0). Deployed seed and baselines: one seed "
    "at the ground truth's centroid (nearest lesion pixel if the centroid is outside). Oracle modes pick segments "
    "with the ground truth and are a ceiling, not an achievable result."
)
MEANINGLESS = "**meaningless: random weights** — this model has random weights; its numbers only prove the harness runs."


def machine_summary() -> str:
    """The machine a number was measured on, in one line (OS, CPU count, GPU if torch sees one)."""
    import os
    import platform

    text = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    try:
        import torch

        text += f", torch {torch.__version__}"
        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
        else:
            text += ", no GPU"
    except ImportError:
        pass
    return text


def run_stamp(subcommand: str) -> dict:
    """How, when and where a measurement was taken: the ``command``, ``date`` and ``machine`` of a record."""
    import datetime
    import shlex
    import sys

    arguments = sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == subcommand else sys.argv[1:]
    return {
        "command": f"zsdseg {subcommand} " + shlex.join(arguments),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_summary(),
    }


def is_meaningless(model_id: Optional[str]) -> bool:
    return bool(model_id) and str(model_id).startswith("random:")


def summarize_modes(cases: Sequence[dict], modes: Sequence[str]) -> Dict[str, Dict[str, dict]]:
    """Per mode and metric, the summary over the cases that finished."""
    finished = [case for case in cases if case.get("status") == "ok"]
    return {
        mode: {metric: summarize(case["metrics"][mode][metric] for case in finished if mode in case["metrics"]) for metric in METRICS}
        for mode in modes
    }


def _json_safe(value):
    """NaN is not JSON; write null so any JSON reader can load the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_results_json(path: Path, meta: dict, summary: dict, cases: Sequence[dict]) -> None:
    document = {"meta": meta, "conventions": CONVENTIONS, "summary": summary, "cases": list(cases)}
    Path(path).write_text(json.dumps(_json_safe(document), indent=2) + "\n", encoding="utf-8")


def write_report_md(path: Path, meta: dict, summary: dict, cases: Sequence[dict]) -> None:
    lines: List[str] = [f"# Evaluation: {meta.get('dataset', '')}", ""]
    if meta.get("meaningless"):
        lines += [MEANINGLESS, ""]
    for key in ("command", "date", "machine", "model", "device", "layout", "root", "selection", "prompt"):
        if meta.get(key) is not None:
            lines.append(f"- {key}: `{meta[key]}`")
    n_ok = sum(1 for c in cases if c.get("status") == "ok")
    lines += [f"- cases: {n_ok} evaluated, {len(cases) - n_ok} failed", ""]
    unit = "mm" if meta.get("kind") == "volume" else "px"
    lines += [
        f"| mode | n | Dice mean ± sd | Dice median | Dice 95% CI | IoU mean ± sd | IoU median | HD95 ({unit}) median | HD95 undefined |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, metrics in summary.items():
        lines.append(f"| {MODE_TITLES.get(mode, mode)} | {summary_row(metrics)} |")
    lines += ["", CONVENTIONS, ""]
    modes = list(summary)
    finished = [c for c in cases if c.get("status") == "ok"]
    if finished and modes:
        lines += ["## Dice per case", "", "| case | " + " | ".join(modes) + " |", "|---" * (len(modes) + 1) + "|"]
        for case in finished:
            cells = [f"{case['metrics'][m]['dice']:.3f}" if m in case["metrics"] else "" for m in modes]
            lines.append(f"| {case['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    failed = [c for c in cases if c.get("status") != "ok"]
    if failed:
        lines += ["## Failed cases", ""] + [f"- `{c['name']}`: {c.get('error', '')}" for c in failed] + [""]
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def summary_row(metrics: dict, digits: int = 3) -> str:
    """The table cells of one mode: n, Dice mean ± sd, median, CI, IoU mean ± sd, median, HD95 median, undefined."""
    def number(value, d=digits):
        return "n/a" if value is None or not math.isfinite(value) else f"{value:.{d}f}"

    dice, iou, hd95 = metrics["dice"], metrics["iou"], metrics["hd95"]
    return " | ".join([
        str(dice["n"]),
        f"{number(dice['mean'])} ± {number(dice['sd'])}",
        number(dice["median"]),
        f"{number(dice['ci_low'])}–{number(dice['ci_high'])}",
        f"{number(iou['mean'])} ± {number(iou['sd'])}",
        number(iou["median"]),
        number(hd95["median"], 1),
        str(hd95["n_undefined"]),
    ])
