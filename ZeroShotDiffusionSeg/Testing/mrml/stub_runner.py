"""A Runner that "segments" by writing a known result next to the input, as the worker does."""

from __future__ import annotations

import json
import os

from ZeroShotDiffusionSegLib.runners.base import JobHandle, Runner, RunnerEvent

from scene_builders import write_result


class StubRunner(Runner):
    """Progress on the first poll, the result on the second; ``result_options`` go to write_result."""

    def __init__(self, **result_options):
        self.result_options, self.job, self.events, self.requests, self.stopped = result_options, None, [], [], False
        self.rescored = []  # (previous job id, request) of every rescore call

    @property
    def busy(self):
        return self.job is not None

    def describe(self):
        return "stub"

    def start(self, input_path, out_dir, request):
        self.requests.append(request)
        files = write_result(input_path, out_dir, **self.result_options)
        self.job = JobHandle(input_path, out_dir)
        self.events = [[RunnerEvent("progress", self.job.job_id, stage="segment", fraction=0.5)],
                       [RunnerEvent("done", self.job.job_id, files=files, messages=["2 lesion(s)"])]]
        return self.job

    def rescore(self, previous, out_dir, request):
        """As the local worker's re-prompt: the previous job's input, scored "from the cache"."""
        self.rescored.append((previous.job_id, request))
        self.start(previous.input_path, out_dir, request)
        self.requests.pop()
        files = self.events[-1][0].files
        files["provenance"] = os.path.join(out_dir, "provenance.json")
        timings = {"read": 0.1, "segment": 0.2, "segment_per_slice": 0.01}
        if request.pseudo_healthy is not None:
            timings["pseudo_healthy"] = 1.5  # the worker repaints on a re-prompt too (volume/pipeline.py)
        with open(files["provenance"], "w", encoding="utf-8") as handle:
            json.dump({"runtime": {"query_cache": "memory hit", "timings_s": timings}}, handle)
        return self.job

    def poll(self):
        events = self.events.pop(0) if self.events else []
        if any(event.final for event in events):
            self.job = None
        return events

    def cancel(self):
        if self.job:
            self.events = [[RunnerEvent("cancelled", self.job.job_id)]]
            self.job = None

    def shutdown(self):
        self.cancel()
        self.stopped = True
