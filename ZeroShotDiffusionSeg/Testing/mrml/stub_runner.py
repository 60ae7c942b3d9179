"""A Runner that "segments" by writing a known result next to the input, as the worker does."""

from __future__ import annotations

from ZeroShotDiffusionSegLib.runners.base import JobHandle, Runner, RunnerEvent

from scene_builders import write_result


class StubRunner(Runner):
    """Progress on the first poll, the result on the second; ``result_options`` go to write_result."""

    def __init__(self, **result_options):
        self.result_options, self.job, self.events, self.requests, self.stopped = result_options, None, [], [], False

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
