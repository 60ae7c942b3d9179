"""The FastAPI application of ``zsdseg serve``.

``create_app(settings, executors, engine_info)`` takes what runs a job (one executor
per worker: ``run_volume`` bound to a loaded segmenter in production, a stand-in in
tests), so the HTTP layer never knows how segmentation is done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..errors import UserError
from . import schemas
from .auth import PRINCIPAL_SCOPE_KEY, BearerAuthMiddleware, TokenStore
from .jobs import DONE, Executor, Job, JobManager, QueueFull
from .protocol import (PROTOCOL_HEADER, PROTOCOL_VERSION, RESULT_FILES, is_compatible, request_from_json, results_known_to,
                       upload_extension)
from .reprompt import add_reprompt_route
from .request_errors import one_line, validation_detail
from .uploads import validate_upload

log = logging.getLogger("zsdseg.server")

MEDIA_TYPES = {".nrrd": "application/octet-stream", ".csv": "text/csv", ".json": "application/json"}
LONG_POLL_STEP_S = 0.05


@dataclass
class ServerSettings:
    tokens: Optional[TokenStore] = None  # None: no authentication (the CLI allows it on loopback only)
    max_upload_bytes: int = 512_000_000
    max_voxels: int = 512 * 512 * 2048
    max_healthy_steps: int = 100  # pseudo-healthy denoising steps per slice a request may ask for
    result_ttl_s: float = 3600.0
    max_queued: int = 64
    work_parent: Optional[Path] = None  # where the private work directory is made; None: the system temp dir
    max_long_poll_s: float = 30.0


def create_app(settings: ServerSettings, executors: Sequence[Executor], engine_info: Callable[[], dict]) -> FastAPI:
    """``engine_info()`` returns model_id, provenance, device and gpu_memory (or None) for /info."""
    jobs = JobManager(executors, settings.work_parent, settings.result_ttl_s, settings.max_queued)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        jobs.start()
        try:
            yield
        finally:
            await run_in_threadpool(jobs.stop)

    # No /docs page: it loads its JavaScript from a CDN, which a hospital network may not reach.
    app = FastAPI(
        title="ZeroShotDiffusionSeg server",
        version=__version__,
        description=f"Zero-shot lesion segmentation of volumes. Protocol {PROTOCOL_VERSION}.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.jobs = jobs
    app.state.settings = settings
    # Each add_middleware wraps the ones added before it, so ProtocolCheck is outermost, then
    # BearerAuth, then UploadLimit: the version check and the token check run before any body is read.
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(BearerAuthMiddleware, tokens=settings.tokens)
    app.add_middleware(ProtocolCheckMiddleware)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, error: QueueFull):
        return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "30"})

    @app.exception_handler(UserError)
    async def user_error(request: Request, error: UserError):
        return JSONResponse({"detail": one_line(str(error))}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        return JSONResponse({"detail": validation_detail(error.errors())}, status_code=422)

    # Checking an upload decodes the whole volume; a few at a time bound the memory a burst of uploads takes.
    upload_checks = asyncio.Semaphore(max(2, len(executors)))
    bearer = HTTPBearer(auto_error=False, description="a token from the server's --token-file")

    def owner(request: Request, _credentials=Depends(bearer)) -> str:
        # BearerAuthMiddleware has checked the token already; this dependency names the
        # owner and documents the scheme in the OpenAPI schema.
        return request.scope[PRINCIPAL_SCOPE_KEY]

    def owned_job(job_id: str, who: str = Depends(owner)) -> Job:
        job = jobs.get(job_id, who)
        if job is None:
            raise HTTPException(404, "no such job (it may have expired or been deleted)")
        return job

    def known_results(request: Request) -> tuple:
        """The result names the calling client knows, from the protocol version it announced."""
        return results_known_to(request.headers.get(PROTOCOL_HEADER))

    def status_of(job: Job, known: tuple = tuple(RESULT_FILES)) -> schemas.JobStatus:
        return schemas.JobStatus(
            id=job.id,
            state=job.state,
            stage=job.stage,
            fraction=min(max(job.fraction, 0.0), 1.0),
            eta_s=job.eta_s,
            queue_position=jobs.queue_position(job),
            error=job.error,
            messages=job.messages,
            lesions=job.lesions if job.state == DONE else [],
            results=sorted(name for name in job.results if name in known) if job.state == DONE else [],
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            expires_at=jobs.expires_at(job),
            version=job.version,
        )

    errors = schemas.ERROR_RESPONSES

    @app.get("/health", response_model=schemas.Health, summary="Liveness and protocol version (no token needed)")
    def health():
        return schemas.Health(protocol_version=PROTOCOL_VERSION)

    @app.get("/info", response_model=schemas.Info, responses=errors, summary="Server, protocol, model and queue")
    def info(_who: str = Depends(owner)):
        engine = engine_info()
        counts = jobs.counts()
        return schemas.Info(
            server_version=__version__,
            protocol_version=PROTOCOL_VERSION,
            model_id=engine["model_id"],
            provenance=engine.get("provenance", {}),
            device=engine.get("device", "unknown"),
            gpu_memory=engine.get("gpu_memory"),
            workers=counts["workers"],
            queue_length=counts["queued"],
            running=counts["running"],
            limits=schemas.Limits(
                max_upload_bytes=settings.max_upload_bytes,
                max_voxels=settings.max_voxels,
                max_queued_jobs=settings.max_queued,
                result_ttl_s=settings.result_ttl_s,
            ),
        )

    @app.post(
        "/jobs",
        status_code=202,
        response_model=schemas.JobStatus,
        responses={**errors, 400: {"model": schemas.Error}, 413: {"model": schemas.Error}, 415: {"model": schemas.Error}, 503: {"model": schemas.Error}},
        summary="Upload a volume and queue a segmentation job",
    )
    async def submit_job(
        volume: UploadFile = File(..., description="NRRD (.nrrd), NIfTI (.nii, .nii.gz) or MetaImage (.mha)"),
        request: str = Form("{}", description="a VolumeRequest as JSON, the same parameters as `zsdseg segment`"),
        who: str = Depends(owner),
    ):
        try:
            extension = upload_extension(volume.filename)
        except UserError as error:
            raise HTTPException(415, str(error)) from None
        volume_request = request_from_json(request)
        job_id, work_dir = jobs.new_job_dir()
        input_path = work_dir / f"input{extension}"  # the client's file name is never used on disk
        try:
            await run_in_threadpool(_copy_upload, volume.file, input_path)
            async with upload_checks:
                await run_in_threadpool(validate_upload, input_path, work_dir / "out", volume_request, settings.max_voxels, extension,
                                        max_healthy_steps=settings.max_healthy_steps)
            job = jobs.submit(job_id, who, work_dir, input_path, volume_request)
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        return JSONResponse(status_of(job).model_dump(), status_code=202, headers={"Location": f"/jobs/{job.id}"})

    @app.get("/jobs", response_model=list[schemas.JobStatus], responses=errors, summary="This token's jobs")
    def list_jobs(who: str = Depends(owner), known: tuple = Depends(known_results)):
        return [status_of(job, known) for job in jobs.list_for(who)]

    @app.get("/jobs/{job_id}", response_model=schemas.JobStatus, responses=errors, summary="A job's state and progress")
    async def job_status(
        job: Job = Depends(owned_job),
        wait_s: float = Query(0.0, ge=0.0, le=60.0, description="long poll: wait up to this long for a change"),
        since: int = Query(-1, description="the 'version' of the last status seen; the answer comes when it differs"),
        known: tuple = Depends(known_results),
    ):
        deadline = time.monotonic() + min(wait_s, settings.max_long_poll_s)
        while job.version == since and not job.deleted and time.monotonic() < deadline:
            await asyncio.sleep(LONG_POLL_STEP_S)
        if job.deleted:
            raise HTTPException(404, "no such job (it may have expired or been deleted)")
        return status_of(job, known)

    @app.get(
        "/jobs/{job_id}/results/{name}",
        responses={**errors, 409: {"model": schemas.Error}, 200: {"content": {"application/octet-stream": {}}}},
        response_class=Response,
        summary="Download one result: labels.nrrd, score.nrrd, lesions.csv, provenance.json; healthy.nrrd and residual.nrrd after a pseudo-healthy run",
    )
    def job_result(name: schemas.ResultName, job: Job = Depends(owned_job)):
        if job.state != DONE:
            raise HTTPException(409, f"the job is {job.state}; results exist only for a finished ('done') job")
        path = job.results.get(name)
        try:
            # Opened before answering, so a result that expires mid-download is still sent whole.
            handle = open(path, "rb") if path is not None else None
        except OSError:
            handle = None
        if handle is None:
            raise HTTPException(404, f"the job has no {name} result")
        headers = {
            "Content-Disposition": f'attachment; filename="{RESULT_FILES[name]}"',
            # The open file's size: the path may already be gone (expired) when this runs.
            "Content-Length": str(os.fstat(handle.fileno()).st_size),
        }
        return StreamingResponse(_chunks(handle), media_type=MEDIA_TYPES.get(Path(RESULT_FILES[name]).suffix), headers=headers)

    @app.post("/jobs/{job_id}/cancel", status_code=202, response_model=schemas.JobStatus, responses=errors, summary="Cancel a job")
    def cancel_job(job: Job = Depends(owned_job), known: tuple = Depends(known_results)):
        jobs.cancel(job)
        return status_of(job, known)

    @app.delete("/jobs/{job_id}", status_code=204, responses=errors, summary="Cancel if needed and remove a job and its files")
    def delete_job(job: Job = Depends(owned_job)):
        jobs.delete(job)
        return Response(status_code=204)

    add_reprompt_route(app, jobs, owned_job, status_of, errors, settings.max_voxels, settings.max_healthy_steps)
    return app


def _copy_upload(source, destination: Path) -> None:
    source.seek(0)
    with open(destination, "xb") as target:
        shutil.copyfileobj(source, target, 1024 * 1024)


def _chunks(handle, size: int = 1024 * 1024):
    with handle:
        while True:
            chunk = handle.read(size)
            if not chunk:
                return
            yield chunk


class ProtocolCheckMiddleware:
    """Answers 426 to a client that announces an incompatible protocol version."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            announced = dict(scope.get("headers", [])).get(PROTOCOL_HEADER.lower().encode())
            if announced is not None and not _compatible(announced.decode("latin-1")):
                detail = f"this server speaks protocol {PROTOCOL_VERSION} (zsdseg {__version__}); the client announced {announced.decode('latin-1')[:20]}"
                return await JSONResponse({"detail": detail}, status_code=426)(scope, receive, send)
        return await self.app(scope, receive, send)


def _compatible(version: str) -> bool:
    try:
        return is_compatible(version)
    except UserError:
        return False


class UploadLimitMiddleware:
    """Refuses a request body over ``max_bytes`` with a 413 that says the limit: at once when
    Content-Length announces it, otherwise as soon as the count of received bytes passes it."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    def _too_large(self) -> str:
        return f"the upload is larger than this server's limit of {self.max_bytes / 1e6:.1f} MB (--max-upload-mb)"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await JSONResponse({"detail": self._too_large()}, status_code=413, headers={"Connection": "close"})(scope, receive, send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self._too_large())
            return message

        return await self.app(scope, counting_receive, send)
