"""Ways to run a volume segmentation job away from Slicer's main thread.

``base.Runner`` is the interface the Slicer logic uses; ``local.LocalWorkerRunner`` runs
a warm worker subprocess on this computer. A remote runner (HTTP server) implements the
same interface, so the logic does not know where the engine runs.
"""

from .base import JobHandle, Runner, RunnerEvent

__all__ = ["JobHandle", "Runner", "RunnerEvent"]
