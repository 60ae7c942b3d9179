"""``zsdseg worker``: the warm engine process behind the Slicer panel.

Loads the model once, announces ``ready``, then serves one job per stdin line until
stdin closes (Slicer quit or the runner shut it down). The wire format is in
``runners/protocol.py``. stdout carries protocol lines only: the real stdout is kept
for them and everything else (library prints, warnings, tqdm, C-level output) goes to
stderr, which the runner shows as the log.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import threading
import traceback
from typing import Callable, Optional, TextIO, Tuple

from .errors import Cancelled, UserError
from .progress import ProgressEvent
from .runners.protocol import EarlierJob, decode_job, done_line, error_line, progress_line, ready_line

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"  # engine.DEFAULT_MODEL; not imported, it would load torch

# (model, device, dtype) -> (segmenter, device description); replaced by tests with a stand-in.
Loader = Callable[[str, str, Optional[str]], Tuple[object, str]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="hub id or local diffusers folder (a local folder works offline)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default=None, help="float16 or float32 (default: fp16 on CUDA, else fp32)")
    parser.add_argument("--cache-mb", type=float, default=4096.0,
                        help="memory for the query cache (default 4096: one 300-slice 512 px volume); "
                             "another prompt on a cached volume needs no model pass")


def describe_device(device) -> str:
    """'cpu', or 'cuda:0 (NVIDIA H100, 79 GB)': what the panel shows once the worker is ready."""
    if getattr(device, "type", str(device)) != "cuda":
        return str(device)
    import torch

    properties = torch.cuda.get_device_properties(device)
    return f"{device} ({properties.name}, {properties.total_memory / 2**30:.0f} GB)"


def load_engine(model: str, device: str, dtype: Optional[str]):
    from .engine import DiffusionSegmenter, load_backbone

    backbone = load_backbone(model, device=device, dtype=dtype)  # resolves "auto", refuses a missing GPU
    return DiffusionSegmenter(backbone), describe_device(backbone.device)


class FinishedInputs:
    """Input paths of the last finished jobs, so that a re-prompt line can name a job instead of a file."""

    def __init__(self, keep: int = 32):
        self.keep = keep
        self._paths: "collections.OrderedDict[str, str]" = collections.OrderedDict()

    def remember(self, job_id: str, input_path: str) -> None:
        self._paths[job_id] = input_path
        while len(self._paths) > self.keep:
            self._paths.popitem(last=False)

    def resolve(self, source) -> str:
        if not isinstance(source, EarlierJob):
            return source
        if source.job_id not in self._paths:
            raise UserError(f"re-prompt of job {source.job_id}, which this worker has not finished (restarted?): "
                            "run the segmentation again")
        return self._paths[source.job_id]


def _claim_stdout() -> TextIO:
    """Keep the real stdout for protocol lines; send every other write on fd 1 to stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8", buffering=1)


def _job_failure_message(error: BaseException) -> str:
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, MemoryError) or "out of memory" in str(error).lower():
        return f"out of memory: {str(error).splitlines()[0] if str(error) else 'MemoryError'}"
    return f"{type(error).__name__}: {error}"


def serve(args: argparse.Namespace, load: Loader = load_engine, run_volume: Optional[Callable] = None,
          requests: Optional[TextIO] = None, out: Optional[TextIO] = None) -> int:
    """The worker loop with its engine and pipeline injectable (tests pass stand-ins)."""
    out = out or _claim_stdout()
    requests = requests or sys.stdin

    lock = threading.Lock()  # progress may be reported from the pipeline's threads: whole lines only

    def emit(line: str) -> None:
        with lock:
            out.write(line + "\n")
            out.flush()

    if run_volume is None:
        from .volume.pipeline import run_volume
        from .volume.query_cache import QueryCache

        # Re-prompting: a job on a volume the worker has seen is scored from its cached pass.
        run_volume = functools.partial(run_volume, cache=QueryCache(getattr(args, "cache_mb", 4096.0)))
    emit(progress_line(None, ProgressEvent("loading model", 0.0, None, args.model)))
    try:
        segmenter, device = load(args.model, args.device, args.dtype)
    except UserError as error:  # ModelLoadError included: already one clear line
        emit(error_line(None, str(error), fatal=True))
        return 2
    except Exception as error:
        traceback.print_exc()
        emit(error_line(None, f"the model could not be loaded: {_job_failure_message(error)}", fatal=True))
        return 3
    emit(ready_line(args.model, device))
    inputs = FinishedInputs()

    for line in requests:
        if not line.strip():
            continue
        try:
            job_id, input_path, out_dir, request = decode_job(line)
            input_path = inputs.resolve(input_path)
        except UserError as error:
            emit(error_line(None, str(error)))
            continue
        print(f"job {job_id}: {input_path} -> {out_dir}", file=sys.stderr, flush=True)
        try:
            result = run_volume(input_path, out_dir, segmenter, request,
                                progress=lambda event, job_id=job_id: emit(progress_line(job_id, event)))
            inputs.remember(job_id, input_path)
            emit(done_line(job_id, result))
        except Cancelled:
            emit(error_line(job_id, "cancelled"))
        except Exception as error:
            if not isinstance(error, UserError):
                traceback.print_exc()
            from .volume.batching import release_accelerator_memory  # the batch runner's own OOM clean-up

            release_accelerator_memory()
            emit(error_line(job_id, _job_failure_message(error)))
    return 0


def run(args: argparse.Namespace) -> int:
    return serve(args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="zsdseg worker", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
