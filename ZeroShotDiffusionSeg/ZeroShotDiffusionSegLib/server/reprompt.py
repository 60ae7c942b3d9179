"""``POST /jobs/{id}/prompt``: a finished job's volume, a new request (typically another prompt), no upload.

The answer is a **new job** (202, ``Location: /jobs/{new id}``), polled and downloaded like any other;
the original job and its result files stay as they were, so a client that already fetched them
sees no change and can compare both. The new job gets its own link (or copy) of the original upload,
which the server keeps for a finished job as long as its results (``result_ttl_s``) and removes with
it. It is checked and queued like an upload (same token rules: only the job's owner may re-prompt
it; another token gets 404), and its executor scores it from its query cache when it still holds
that volume and the request changes nothing of the pass (volume/query_cache.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fastapi import Depends, Form, HTTPException
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from . import schemas
from .jobs import DONE, Job
from .protocol import request_from_json
from .uploads import validate_upload


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)


def add_reprompt_route(app, jobs, owned_job, status_of, errors: dict, max_voxels: int, max_healthy_steps: int) -> None:
    """Register the route on ``app``; ``owned_job`` and ``status_of`` are the app's own helpers."""

    @app.post(
        "/jobs/{job_id}/prompt",
        status_code=202,
        response_model=schemas.JobStatus,
        responses={**errors, 400: {"model": schemas.Error}, 409: {"model": schemas.Error}, 503: {"model": schemas.Error}},
        summary="Queue a new job on a finished job's volume with a new request (e.g. another prompt); no upload",
    )
    async def reprompt_job(
        request: str = Form(..., description="a VolumeRequest as JSON, e.g. {\"prompt\": \"hypodense liver lesion\"}"),
        job: Job = Depends(owned_job),
    ):
        if job.state != DONE or not job.input_path.is_file():
            raise HTTPException(409, f"the job is {job.state}; only a finished ('done') job's volume can be re-prompted")
        volume_request = request_from_json(request)
        new_id, work_dir = jobs.new_job_dir()
        input_path = work_dir / job.input_path.name
        try:
            await run_in_threadpool(_link_or_copy, job.input_path, input_path)
            await run_in_threadpool(validate_upload, input_path, work_dir / "out", volume_request, max_voxels,
                                     max_healthy_steps=max_healthy_steps)
            new_job = jobs.submit(new_id, job.owner, work_dir, input_path, volume_request)
        except FileNotFoundError:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise HTTPException(409, "the job's volume has expired; upload it again") from None
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        return JSONResponse(status_of(new_job).model_dump(), status_code=202, headers={"Location": f"/jobs/{new_job.id}"})
