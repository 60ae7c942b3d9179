"""The worker's wire format: one JSON object per line, requests on stdin, events on stdout.

Request:  {"id": str, "input": path, "out_dir": path, "request": VolumeRequest.to_dict()}
Re-prompt:{"id": str, "reprompt_of": id of an earlier job of this worker, "out_dir": path, "request": ...}
          (the earlier job's volume, scored from the worker's query cache when it still holds it)
Events:   {"event": "ready", "model", "device"}
          {"event": "progress", "id", "stage", "fraction", "eta_s", "message"}
          {"event": "done", "id", "files": {name: path}, "lesions": [...], "messages": [...]}
          {"event": "error", "id" (absent when fatal at start-up), "message", "fatal": bool}

Both ends import this file, so the runner and the worker cannot disagree on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from ..engine.healthy_params import PseudoHealthyParams
from ..engine.types import SegmentationParams
from ..errors import UserError
from ..progress import ProgressEvent
from ..volume.request import VolumeRequest, VolumeResult
from .base import RunnerEvent


def request_from_dict(data: dict) -> VolumeRequest:
    """Inverse of ``VolumeRequest.to_dict()``; every value is checked by VolumeRequest /
    SegmentationParams / PseudoHealthyParams."""
    if not isinstance(data, dict):
        raise UserError(f"the request must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - set(VolumeRequest.__dataclass_fields__)
    if unknown:
        raise UserError(f"request has unknown fields {sorted(unknown)[:5]}: client and engine versions differ")
    values = dict(data)
    if "params" in values:
        values["params"] = _decoded(values["params"], SegmentationParams, "params", "segmentation parameters")
    if values.get("pseudo_healthy") is not None:
        values["pseudo_healthy"] = _decoded(values["pseudo_healthy"], PseudoHealthyParams, "pseudo_healthy",
                                            "pseudo-healthy parameters")
    return VolumeRequest(**values)


def _decoded(data, kind: type, name: str, words: str):
    """``kind(**data)`` for a nested JSON object; its values are checked by ``kind`` itself."""
    if not isinstance(data, dict):
        raise UserError(f"{name} must be a JSON object of {words}, got {type(data).__name__}")
    unknown = set(data) - set(kind.__dataclass_fields__)
    if unknown:
        raise UserError(f"{name} has unknown fields {sorted(unknown)[:5]}: client and engine versions differ")
    return kind(**data)


def encode_job(job_id: str, input_path: str, out_dir: str, request: VolumeRequest) -> str:
    return json.dumps({"id": job_id, "input": str(input_path), "out_dir": str(out_dir),
                       "request": request.to_dict()})


def encode_reprompt(job_id: str, previous_job_id: str, out_dir: str, request: VolumeRequest) -> str:
    return json.dumps({"id": job_id, "reprompt_of": previous_job_id, "out_dir": str(out_dir), "request": request.to_dict()})


@dataclass(frozen=True)
class EarlierJob:
    """The input of a re-prompt line: the volume of the worker's earlier job ``job_id``."""

    job_id: str


def decode_job(line: str) -> Tuple[str, Union[str, EarlierJob], str, VolumeRequest]:
    """(id, input path or ``EarlierJob``, out_dir, request) of a job or re-prompt line."""
    try:
        data = json.loads(line)
        source = EarlierJob(str(data["reprompt_of"])) if "reprompt_of" in data else data["input"]
        return str(data["id"]), source, data["out_dir"], request_from_dict(data.get("request") or {})
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"malformed request line: {error}") from error


def ready_line(model: str, device: str) -> str:
    return json.dumps({"event": "ready", "model": model, "device": device})


def progress_line(job_id: Optional[str], event: ProgressEvent) -> str:
    data = json.loads(event.to_json())
    data["id"] = job_id
    return json.dumps(data)


def done_line(job_id: str, result: VolumeResult) -> str:
    return json.dumps({"event": "done", "id": job_id,
                       "files": {name: str(path) for name, path in result.files.items()},
                       "lesions": result.lesions, "messages": list(result.messages)}, default=str)


def error_line(job_id: Optional[str], message: str, fatal: bool = False) -> str:
    return json.dumps({"event": "error", "id": job_id, "message": message, "fatal": fatal})


def event_from_line(line: str) -> Optional[RunnerEvent]:
    """A RunnerEvent from one stdout line, or None when the line is not protocol JSON."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    kind = data.get("event") if isinstance(data, dict) else None
    if kind == "ready":
        return RunnerEvent("ready", info={k: v for k, v in data.items() if k != "event"})
    if kind == "progress":
        return RunnerEvent("progress", data.get("id"), stage=data.get("stage", ""),
                           fraction=data.get("fraction"), eta_s=data.get("eta_s"), message=data.get("message", ""))
    if kind == "done":
        return RunnerEvent("done", data.get("id"), files=dict(data.get("files") or {}),
                           lesions=list(data.get("lesions") or []), messages=list(data.get("messages") or []))
    if kind == "error":
        return RunnerEvent("error", data.get("id"), message=str(data.get("message", "")), fatal=bool(data.get("fatal")))
    return None
