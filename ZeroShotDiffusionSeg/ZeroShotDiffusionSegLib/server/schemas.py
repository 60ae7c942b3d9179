"""The server's JSON answers as pydantic models, so the OpenAPI schema states them exactly.
Server side only: the client reads the same JSON as plain dicts (see protocol.py)."""

from __future__ import annotations

from typing import Dict, List, Literal, Optional

from pydantic import BaseModel, Field

from .protocol import RESULT_FILES

JobStateName = Literal["queued", "running", "done", "failed", "cancelled"]
ResultName = Literal[tuple(RESULT_FILES)]  # type: ignore[valid-type]  (one list: the protocol's)


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    protocol_version: str


class GpuMemory(BaseModel):
    free_bytes: int
    total_bytes: int


class Limits(BaseModel):
    max_upload_bytes: int
    max_voxels: int
    max_queued_jobs: int
    result_ttl_s: float


class Info(BaseModel):
    server_version: str
    protocol_version: str
    model_id: str
    provenance: dict = Field(description="the engine's provenance: model id, weight checksums, device, dtype")
    device: str
    gpu_memory: Optional[GpuMemory] = None
    workers: int
    queue_length: int = Field(description="jobs waiting to start")
    running: int
    limits: Limits


class JobStatus(BaseModel):
    id: str
    state: JobStateName
    stage: str
    fraction: float = Field(ge=0.0, le=1.0)
    eta_s: Optional[float] = None
    queue_position: Optional[int] = Field(None, description="1 = next to start; null once started")
    error: Optional[str] = None
    messages: List[str] = Field([], description="what the pipeline chose or skipped, for the user")
    lesions: List[dict] = Field([], description="rows of lesions.csv with their JSON types (state 'done')")
    results: List[ResultName] = Field([], description="results ready to fetch (state 'done')")
    created_at: float
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    expires_at: Optional[float] = Field(None, description="when a finished job and its results are removed")
    version: int = Field(description="changes whenever the status does; pass it as ?since= to long-poll")


class Error(BaseModel):
    detail: str


ERROR_RESPONSES: Dict[int, dict] = {
    401: {"model": Error, "description": "no bearer token"},
    403: {"model": Error, "description": "invalid token"},
    404: {"model": Error, "description": "no such job for this token"},
    426: {"model": Error, "description": "incompatible protocol version"},
}
