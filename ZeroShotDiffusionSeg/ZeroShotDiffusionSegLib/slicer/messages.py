"""What the panel tells the user when something goes wrong, and what it offers to do.

The worker and the runners report failures as one-line messages; ``explain`` turns such
a line into a ``UserMessage`` with a title, a sentence the user can act on and the
actions the panel should offer (run on CPU, draw an ROI, restart the worker...). Kept
out of the module file so the wording is tested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

# Rough per-slice seconds for one SD 1.x forward pass at 512 px (VAE encode + one UNet
# step + attention merging), fp16 GPU vs fp32 CPU. Wide ranges on purpose: CPUs differ by
# 4x; the real ETA comes from the worker's measured progress once the run starts.
SECONDS_PER_SLICE = {"cuda": (0.15, 0.6), "mps": (1.0, 3.0), "cpu": (4.0, 15.0)}
MODEL_LOAD_SECONDS = {"cuda": (10, 40), "mps": (20, 60), "cpu": (20, 90)}

OFFER_CPU = "run_on_cpu"
OFFER_ROI = "draw_roi"
OFFER_RESTART = "restart_worker"
OFFER_SHOW_LOG = "show_log"
OFFER_CHOOSE_FOLDER = "choose_model_folder"


@dataclass
class UserMessage:
    title: str
    text: str
    actions: List[str] = field(default_factory=list)
    detail: str = ""  # log tail or the raw message, for the "Details" part of a dialog


def _minutes(seconds: float) -> str:
    return f"{max(1, round(seconds / 60))} min" if seconds >= 60 else f"{max(1, round(seconds))} s"


def estimate_run_seconds(slice_count: int, device: str, include_model_load: bool = True):
    """(low, high) seconds for ``slice_count`` slices on ``device`` ("cuda", "mps" or "cpu")."""
    kind = "cuda" if device.startswith("cuda") or device == "gpu" else device
    per_slice = SECONDS_PER_SLICE.get(kind, SECONDS_PER_SLICE["cpu"])
    load = MODEL_LOAD_SECONDS.get(kind, MODEL_LOAD_SECONDS["cpu"]) if include_model_load else (0, 0)
    return load[0] + per_slice[0] * slice_count, load[1] + per_slice[1] * slice_count


def describe_estimate(slice_count: int, device: str, include_model_load: bool = True) -> str:
    low, high = estimate_run_seconds(slice_count, device, include_model_load)
    return f"about {_minutes(low)} to {_minutes(high)} for {slice_count} slices on {device.upper()}"


def no_gpu_message(slice_count: int) -> UserMessage:
    return UserMessage(
        "No GPU found",
        "PyTorch sees no CUDA GPU. The run can continue on the CPU: "
        f"{describe_estimate(slice_count, 'cpu')}. Drawing an ROI around the tumour makes it faster. "
        "If this computer has an NVIDIA GPU, reinstall PyTorch for its driver in the PyTorch Utils module.",
        [OFFER_CPU, OFFER_ROI],
    )


_RULES = [
    (re.compile(r"out of memory|OutOfMemoryError|CUDA error: out of memory|MemoryError", re.I),
     "Out of memory",
     "The GPU (or RAM) ran out of memory. Draw an ROI around the tumour, lower the batch size "
     "in Advanced, or run on the CPU.",
     [OFFER_ROI, OFFER_CPU], False),
    (re.compile(r"no CUDA GPUs are available|CUDA is not available|sees no CUDA GPU|Torch not compiled with CUDA|"
                r"no kernel image is available|CUDA driver", re.I),
     "GPU not usable",
     "PyTorch cannot use the GPU (no GPU, or a PyTorch build that does not match the driver). "
     "Run on the CPU, or reinstall PyTorch in the PyTorch Utils module.",
     [OFFER_CPU], False),
    # The engine's ModelLoadError lines (engine/backbone.py) are specific; they are shown first.
    (re.compile(r"weights|safetensors|snapshot|not found on the hub|offline|HF_HUB_OFFLINE|"
                r"does not appear to have|model_index\.json|Repository Not Found|LocalEntryNotFound|"
                r"could not download model|could not load model|model folder|diffusers folder|unknown model", re.I),
     "Model weights missing",
     "Connect to the internet for the first download, or download the model once "
     "on a connected machine (zsdseg fetch-model <model id> --out-dir FOLDER), copy the folder and choose it as "
     "'Model' in Advanced: "
     "a local folder works offline.",
     [OFFER_CHOOSE_FOLDER], True),
]


def explain(message: str, log_tail: Sequence[str] = ()) -> UserMessage:
    """Map a worker/runner error line to what the user can do about it."""
    for pattern, title, text, actions, message_first in _RULES:
        if pattern.search(message) or any(pattern.search(line) for line in log_tail[-5:]):
            return UserMessage(title, f"{message}\n\n{text}" if message_first else text, list(actions), detail=message)
    return UserMessage("Segmentation failed", message, [OFFER_SHOW_LOG], detail="\n".join(log_tail))


def worker_crash_message(exit_code: Optional[int], log_tail: Sequence[str]) -> UserMessage:
    """The worker process died: show its last lines, offer a restart (it restarts on the next run)."""
    known = explain("\n".join(log_tail[-5:]), ())
    reason = f" ({known.title.lower()})" if known.title != "Segmentation failed" else ""
    code = "" if exit_code is None else f" with exit code {exit_code}"
    return UserMessage(
        "Engine stopped",
        f"The segmentation engine stopped unexpectedly{code}{reason}. Its last log lines are below; "
        "click Segment tumor again to restart it." + (" " + known.text if reason else ""),
        [OFFER_RESTART, OFFER_SHOW_LOG] + [a for a in known.actions if reason],
        detail="\n".join(log_tail),
    )


def volume_type_problem(class_name: str, components: int = 1, dimensions: Sequence[int] = ()) -> Optional[str]:
    """Why a node cannot be segmented, or None. Takes what Slicer reports, not the node."""
    if class_name in ("vtkMRMLLabelMapVolumeNode",):
        return "The input is a labelmap; choose the image (scalar volume) it was drawn on."
    if class_name in ("vtkMRMLDiffusionWeightedVolumeNode", "vtkMRMLDiffusionTensorVolumeNode"):
        return "Diffusion MRI volumes are not supported; choose a scalar volume (e.g. the baseline)."
    if class_name == "vtkMRMLVectorVolumeNode" or components != 1:
        return "The input has several components (colour or vector); convert it to a scalar volume first."
    if dimensions and sum(1 for size in dimensions if size > 1) < 2:
        return "The input volume has fewer than two dimensions with more than one voxel."
    return None
