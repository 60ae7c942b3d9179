"""The logic behind the 3D Slicer panel: geometry conversions, terminology, the live
threshold, the install/consent state machine, panel settings and user-facing messages.

Everything here except ``mrml.py`` is Slicer-free (no ``slicer``, ``qt``, ``vtk`` or torch
import; a static test enforces it), so it is tested with pytest on a plain Python.
``mrml.py`` is the thin MRML glue, imported only inside Slicer by the module file.
"""
