"""ZeroShotDiffusionSeg library: everything but the Slicer GUI.

Importable without Slicer and without torch: heavy modules are imported by the
functions that need them, so the Slicer panel and the CLI's ``--help`` stay fast.
"""

__version__ = "0.1.0"
