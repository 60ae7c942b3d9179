"""The 3D Slicer panel's code: geometry conversions, terminology, the live threshold, the
install/consent state machine, panel settings, user-facing messages, and the MRML side.

Four files import ``slicer`` (a static test keeps it so): ``logic.py`` (the module's Logic),
``importer.py`` (a finished run into the scene), ``run_view.py`` (what the panel shows) and
``mrml.py`` (setup hooks, input checks). They are tested against real MRML with the slicer-core
wheel (Testing/mrml). Everything else is Slicer-free (no ``slicer``, ``qt``, ``vtk`` or torch
import) and tested with pytest on a plain Python.
"""
