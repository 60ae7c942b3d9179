"""Slicer-free logic behind the 3D Slicer panel: geometry conversions, terminology,
the live threshold, the install/consent state machine and user-facing messages.

Nothing here imports ``slicer``, ``qt``, ``vtk`` or torch, so all of it is tested with
pytest on a plain Python; the module file ``ZeroShotDiffusionSeg.py`` only wires it to
MRML nodes and widgets.
"""
