"""Server overhead and load run for ``zsdseg serve`` (issue 5's closing numbers).

1. Overhead: the same small volume segmented locally (``run_volume`` in this process) and
   through a ``zsdseg serve`` subprocess on 127.0.0.1 (upload, queue, run, download),
   alternating, ``--repeats`` times each; medians are compared. Both sides load the same
   model, so the difference is what the server adds.
2. Load: ``--clients`` threads each submit ``--jobs`` jobs one after another, all at once;
   every result must equal the local reference byte for byte (none lost, none mixed up).
   The server process's peak RSS is sampled every 50 ms.

    python benchmarks/server_load.py --model random:tiny --device cpu --clients 4 --jobs 3

Prints one JSON object (also written to ``--out`` when given). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import SimpleITK as sitk


def make_volume(path: Path, slices: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    k, j, i = np.mgrid[:slices, :size, :size]
    blob = ((j - size / 2) ** 2 + (i - size / 3) ** 2) < (size / 6) ** 2
    array = (rng.normal(40, 10, (slices, size, size)) + 200 * blob).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 2.5))
    sitk.WriteImage(image, str(path), True)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PeakRss:
    """Samples a process tree's resident memory in a thread; ``peak_mb`` is the largest sample."""

    def __init__(self, pid: int, interval_s: float = 0.05):
        self._process = psutil.Process(pid)
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak_bytes = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                processes = [self._process] + self._process.children(recursive=True)
                self.peak_bytes = max(self.peak_bytes, sum(p.memory_info().rss for p in processes))
            except psutil.NoSuchProcess:
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_bytes / 2**20


def start_server(args, work: Path, token_file: Path):
    port = free_port()
    command = [sys.executable, "-m", "ZeroShotDiffusionSegLib.cli", "serve", "--model", args.model, "--device", args.device,
               "--port", str(port), "--token-file", str(token_file), "--work-dir", str(work / "server"),
               "--workers", str(args.workers), "--max-queued", str(max(64, args.clients * args.jobs))]
    log = open(work / "server.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None:
            raise SystemExit(f"zsdseg serve exited: see {work / 'server.log'}")
        if time.monotonic() > deadline:
            raise SystemExit("zsdseg serve did not come up within 300 s")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="random:tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="overhead: runs of each kind (median compared)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=3, help="jobs per client in the load run")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (volumes, outputs, server.log)")
    args = parser.parse_args()

    from ZeroShotDiffusionSegLib.engine import DiffusionSegmenter, load_backbone
    from ZeroShotDiffusionSegLib.server.client import ServerClient, run_remote_job
    from ZeroShotDiffusionSegLib.volume import run_volume
    from ZeroShotDiffusionSegLib.volume.request import VolumeRequest

    work = Path(tempfile.mkdtemp(prefix="zsdseg-bench-server-"))
    token = secrets.token_urlsafe(32)
    token_file = work / "tokens"
    token_file.write_text(f"bench:{token}\n")
    token_file.chmod(0o600)
    volume = make_volume(work / "ct.nrrd", args.slices, args.size)
    request = VolumeRequest(prompt="tumor", batch_size=args.slices)  # one engine pass: the same work either way

    segmenter = DiffusionSegmenter(load_backbone(args.model, device=args.device))
    process, url = start_server(args, work, token_file)
    rss = PeakRss(process.pid)
    report = {"model": args.model, "device": args.device, "volume": [args.slices, args.size, args.size],
              "volume_bytes": volume.stat().st_size, "cpu_count": os.cpu_count(), "workers": args.workers}
    try:
        local_s, remote_s, server_s, transfer_s = [], [], [], []
        reference = None
        with ServerClient(url, token=token) as client:
            client.handshake()
            for repeat in range(args.repeats + 1):  # the first pair warms both sides up and is not counted
                started = time.perf_counter()
                local = run_volume(volume, work / f"local{repeat}", segmenter, request)
                local_time = time.perf_counter() - started
                started = time.perf_counter()
                remote = run_remote_job(client, volume, work / f"remote{repeat}", request, poll_s=1.0)
                remote_time = time.perf_counter() - started
                reference = reference or local.files["labels"].read_bytes()
                assert remote.files["labels"].read_bytes() == local.files["labels"].read_bytes()
                if repeat:
                    local_s.append(local_time)
                    remote_s.append(remote_time)
                    server_s.append(remote.timings["server_s"])
                    transfer_s.append(remote.timings["upload_s"] + remote.timings["download_s"])
        local_median, remote_median = statistics.median(local_s), statistics.median(remote_s)
        transfer_median = statistics.median(transfer_s)
        # What the server adds around the job (upload, queue, polling, download) is measured directly:
        # on a shared CPU the run itself varies by tens of percent between two identical runs.
        added_s = [remote - server for remote, server in zip(remote_s, server_s)]
        report["overhead"] = {
            "local_s": local_s, "remote_s": remote_s, "server_run_s": server_s, "transfer_s": transfer_s,
            "local_median_s": local_median, "remote_median_s": remote_median, "transfer_median_s": transfer_median,
            "overhead_fraction": remote_median / local_median - 1.0,
            "server_added_s": added_s,
            "server_added_fraction_of_local": statistics.median(added_s) / local_median,
            "server_added_minus_transfer_s": statistics.median(a - t for a, t in zip(added_s, transfer_s)),
        }

        results, failures = {}, []

        def client_loop(index: int) -> None:
            with ServerClient(url, token=token) as client:
                for job in range(args.jobs):
                    try:
                        out = work / f"load-{index}-{job}"
                        result = run_remote_job(client, volume, out, request, poll_s=1.0)
                        results[(index, job)] = result.files["labels"].read_bytes() == reference
                    except Exception as error:  # counted as lost, and said why
                        failures.append(f"client {index} job {job}: {error!r}")

        started = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        report["load"] = {
            "clients": args.clients, "jobs_per_client": args.jobs, "submitted": args.clients * args.jobs,
            "completed": len(results), "identical_to_local": sum(results.values()), "lost": args.clients * args.jobs - len(results),
            "failures": failures, "wall_s": time.perf_counter() - started,
        }
    finally:
        report["server_peak_rss_mb"] = rss.stop()
        # The benchmark process holds the same model and ran the local jobs: its peak is the local baseline.
        report["local_process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        report["server_exit_code"] = process.returncode
        report["server_left_files"] = sorted(str(p) for p in (work / "server").rglob("*")) if (work / "server").exists() else []
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if report["load"]["lost"] == 0 and not report["server_left_files"] else 1


if __name__ == "__main__":
    sys.exit(main())
