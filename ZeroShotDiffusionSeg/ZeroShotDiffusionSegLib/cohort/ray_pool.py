"""The cases of a batch on Ray actors: each actor loads the model once and runs cases with the same
``run_case`` as the embedded batch; Ray's ActorPool hands the cases out and the driver collects the
records (progress) as they finish. Ctrl-C kills the actors.

Paths are the driver's: on a multi-node cluster the manifest's inputs and --out-dir must be on a
file system every node mounts at the same path, and zsdseg must be installed on every node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

from ..errors import Cancelled, UserError
from .cases import CaseOptions, run_case
from .manifest import Case

RAY_INSTALL_HINT = "pip install 'zeroshotdiffusionseg[ray]' (or pip install 'ray>=2.9')"


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


class CaseWorker:
    """A Ray actor holding one loaded segmenter (wrapped with ray.remote in ``run_on_ray``)."""

    def __init__(self, model: str, device: str, dtype: str):
        from ..engine import DiffusionSegmenter, load_backbone

        self.segmenter = DiffusionSegmenter(load_backbone(model, device=device, dtype=dtype))

    def ready(self) -> str:
        return str(self.segmenter.provenance().get("device", ""))

    def run(self, case: Case, out_root: str, options: CaseOptions, stages=None) -> dict:
        """``stages``: a ray.util.queue.Queue that receives (case id, ProgressEvent) for the driver's bar."""
        def report(event) -> None:
            stages.put_nowait((case.case_id, event))
        return run_case(self.segmenter, case, Path(out_root), options, progress=report if stages is not None else None)


def connect(ray, address: str) -> bool:
    """Join or start a cluster unless this process is already connected; True when we started the connection."""
    if ray.is_initialized():
        return False
    try:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserError(f"cannot connect to the Ray cluster {address!r}: {' '.join(str(error).split())[:200]}") from None
    return True


def pool_size(ray, workers, gpus_per_worker: float, cases: int) -> int:
    """--workers, else as many actors as the cluster's CPUs (CPU actors) or GPUs / --gpus-per-worker allow."""
    if workers is None:
        resources = ray.cluster_resources()
        if gpus_per_worker > 0:
            workers = int(resources.get("GPU", 0) // gpus_per_worker)
            if workers < 1:
                raise UserError(f"the Ray cluster has {resources.get('GPU', 0):g} GPUs, not enough for "
                                f"--gpus-per-worker {gpus_per_worker:g}; use 0 for CPU actors")
        else:
            workers = max(int(resources.get("CPU", 1)), 1)
    return max(1, min(workers, cases))


def _cause(error) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def run_on_ray(pending: List[Case], out_root: Path, options: CaseOptions, args, finished: Callable[[dict], None],
               on_stage: Optional[Callable[[str, object], None]] = None) -> None:
    """Run the cases on an ActorPool; ``finished`` gets each record, ``on_stage`` (if given) the running cases' stages."""
    ray = import_ray()
    from ray.util import ActorPool
    from ray.util.queue import Queue

    started = connect(ray, args.ray)
    gpus = float(args.gpus_per_worker or 0.0)
    device = args.device if gpus > 0 or args.device != "auto" else "cpu"
    resources = {"num_gpus": gpus, "num_cpus": 1} if gpus > 0 else {"num_cpus": 1}
    actors, stages = [], None
    try:
        size = pool_size(ray, args.workers, gpus, len(pending))
        worker = ray.remote(CaseWorker).options(**resources)
        actors = [worker.remote(args.model, device, args.dtype) for _ in range(size)]
        try:
            ray.get([actor.ready.remote() for actor in actors])
        except ray.exceptions.RayError as error:
            raise UserError(f"the Ray workers could not load the model: {_cause(error)}") from None
        stages = Queue() if on_stage is not None else None
        pool = ActorPool(actors)
        for case in pending:
            pool.submit(lambda actor, case: actor.run.remote(case, str(out_root), options, stages), case)
        while pool.has_next():
            try:
                record = pool.get_next_unordered(timeout=0.5)
            except TimeoutError:
                record = None
            while stages is not None and not stages.empty():  # stages first: a case's last stage precedes its end
                on_stage(*stages.get_nowait())
            if record is not None:
                finished(record)
    except KeyboardInterrupt:
        raise Cancelled("cancelled") from None
    finally:
        for actor in actors:
            ray.kill(actor)
        if stages is not None:
            stages.shutdown(force=True)
        if started:
            ray.shutdown()
