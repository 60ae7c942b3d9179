"""``zsdseg serve``: load the model once, then serve jobs over HTTP with uvicorn."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Optional

from ..errors import UserError

log = logging.getLogger("zsdseg.server")

LOOPBACK_NAMES = ("localhost",)


def add_arguments(parser) -> None:
    from ..engine.backbone import DEFAULT_MODEL

    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; anything else needs --token-file)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--token-file", type=Path, help="file with one token per line, or name:token; clients send 'Authorization: Bearer <token>'")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id or local diffusers folder (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default="auto", help="auto (GPU if visible), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="auto: fp16 on GPU, fp32 on CPU")
    parser.add_argument("--max-upload-mb", type=float, default=512.0, help="largest accepted upload in MB (default 512 = 512e6 bytes)")
    parser.add_argument("--max-voxels", type=int, default=512 * 512 * 2048, help="largest accepted volume in voxels (default 512*512*2048)")
    parser.add_argument("--max-healthy-steps", type=int, default=100,
                        help="most pseudo-healthy denoising steps per slice (steps x strength) a request may ask for "
                             "(default 100; the request default runs 10)")
    parser.add_argument("--result-ttl", type=float, default=3600.0, help="seconds a finished job's results are kept (default 3600)")
    parser.add_argument("--workers", type=int, default=1, help="jobs run at once; each worker loads its own copy of the model (default 1)")
    parser.add_argument("--max-queued", type=int, default=64, help="jobs that may wait in the queue (default 64)")
    parser.add_argument("--max-connections", type=int, default=200,
                        help="open connections served at once; more are answered 503 (default 200)")
    parser.add_argument("--header-timeout", type=float, default=30.0, metavar="S",
                        help="close a connection whose request headers have not arrived within S seconds (default 30)")
    parser.add_argument("--work-dir", type=Path, help="parent of the server's private temporary directory (default: the system temp dir)")


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so it counts as public


def check_bind(host: str, token_file: Optional[Path]) -> None:
    if token_file is None and not is_loopback(host):
        raise UserError(
            f"refusing to listen on {host} without --token-file: anyone who can reach this machine could use "
            "the GPU and read results; pass --token-file, or bind to 127.0.0.1 behind a reverse proxy"
        )


def build_executor(segmenter):
    """What runs one job: ``run_volume`` with this segmenter, exactly as a local run does."""
    from ..volume import run_volume
    from ..volume.query_cache import QueryCache

    cache = QueryCache()  # per loaded model copy: a re-prompt on the same executor needs no model pass

    def execute(input_path, out_dir, request, progress=None, cancel=None):
        return run_volume(input_path, out_dir, segmenter, request, progress=progress, cancel=cancel, cache=cache)

    return execute


def engine_info_provider(segmenter, device: str):
    provenance = segmenter.provenance()
    device = str(provenance.get("device", device))

    def engine_info() -> dict:
        return {"model_id": segmenter.model_id, "provenance": provenance, "device": device, "gpu_memory": gpu_memory(device)}

    return engine_info


def gpu_memory(device: str) -> Optional[dict]:
    if not device.startswith("cuda"):
        return None
    import torch

    free, total = torch.cuda.mem_get_info(torch.device(device))
    return {"free_bytes": int(free), "total_bytes": int(total)}


def run(args) -> int:
    check_bind(args.host, args.token_file)
    if args.workers < 1 or args.max_queued < 1 or args.max_upload_mb <= 0 or args.result_ttl < 0 \
            or args.max_connections < 1 or not args.header_timeout > 0 or args.max_voxels < 1 or args.max_healthy_steps < 1:
        raise UserError("--workers, --max-queued, --max-connections, --max-voxels and --max-healthy-steps must be at "
                        "least 1, --max-upload-mb and --header-timeout positive, --result-ttl not negative")
    from .auth import TokenStore

    tokens = TokenStore.from_file(args.token_file) if args.token_file is not None else None

    import uvicorn

    from ..engine import DiffusionSegmenter, load_backbone
    from .app import ServerSettings, create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("loading %s on %s (%d worker%s)", args.model, args.device, args.workers, "s" if args.workers > 1 else "")
    # One model copy per worker: a segmenter's attention hooks hold per-run state, so two
    # jobs must not share one at the same time.
    segmenters = [DiffusionSegmenter(load_backbone(args.model, device=args.device, dtype=args.dtype)) for _ in range(args.workers)]
    settings = ServerSettings(
        tokens=tokens,
        max_upload_bytes=int(args.max_upload_mb * 1e6),
        max_voxels=args.max_voxels,
        max_healthy_steps=args.max_healthy_steps,
        result_ttl_s=args.result_ttl,
        max_queued=args.max_queued,
        work_parent=args.work_dir,
    )
    app = create_app(settings, [build_executor(s) for s in segmenters], engine_info_provider(segmenters[0], args.device))
    log.info("serving on http://%s:%d (%s)", args.host, args.port, "token required" if tokens else "no token: loopback only")
    from .connections import header_timeout_protocol

    uvicorn.run(app, host=args.host, port=args.port, log_level="info", server_header=False,
                http=header_timeout_protocol(args.header_timeout), limit_concurrency=args.max_connections,
                timeout_keep_alive=5)
    return 0
