"""Tests of the module's Slicer code against real MRML (the ``slicer-core`` wheel), without the Qt application.

Run in their own pytest process (``python -m pytest -q ZeroShotDiffusionSeg/Testing/mrml``): they install a
scene, logics and ``slicer.app`` on the real ``slicer`` package, while the stand-in tests in Testing/pytest put
a fake ``slicer`` module in its place. The runtime files slicer-core lacks (ScriptedLoadableModule.py,
parameterNodeWrapper/, terminology and colour files) are read from ``$ZSD_SLICER_RUNTIME``, else from
``../shared/slicer-runtime`` beside the repository. Without the wheel or the runtime every test is skipped
with the reason; with ``ZSD_REQUIRE_SLICER=1`` (CI) that is an error instead, and so is a missing PyQt5
(the ``qt`` module that runs the panel's widgets offscreen, ``pythonqt.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE.parents[1]  # ZeroShotDiffusionSeg/: the module file and its library
REPO = MODULE_DIR.parent
SELF_TEST_DIR = MODULE_DIR / "Testing" / "Python"


def runtime_dir() -> Path:
    return Path(os.environ.get("ZSD_SLICER_RUNTIME") or REPO.parent / "shared" / "slicer-runtime")


def _start_headless_slicer():
    """None when the real-MRML layer is wired, else why it cannot be."""
    try:
        import slicer
    except ImportError:
        return "slicer-core is not installed (pip install -e \".[test,slicer-test]\")"
    if not hasattr(slicer, "vtkMRMLScene"):
        return f"'slicer' at {getattr(slicer, '__file__', '?')} is not the slicer-core wheel"
    runtime = runtime_dir()
    if not (runtime / "python-slicer" / "ScriptedLoadableModule.py").is_file():
        return f"no Slicer runtime files at {runtime} (set ZSD_SLICER_RUNTIME)"
    for path in (MODULE_DIR, SELF_TEST_DIR):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    import headless_slicer

    app = headless_slicer.start(str(runtime), str(MODULE_DIR))
    if not app.realQt and os.environ.get("ZSD_REQUIRE_SLICER") == "1":
        return "PyQt5 is not installed: the panel's binding tests need it (pip install -e \".[slicer-test]\")"
    return None


UNAVAILABLE = _start_headless_slicer()
if UNAVAILABLE and os.environ.get("ZSD_REQUIRE_SLICER") == "1":
    raise pytest.UsageError(f"ZSD_REQUIRE_SLICER=1 but the real-MRML tests cannot run: {UNAVAILABLE}")


class _Unavailable(pytest.Module):
    def collect(self):
        pytest.skip(UNAVAILABLE)


def pytest_pycollect_makemodule(module_path, parent):
    if UNAVAILABLE:  # skip with the reason instead of failing on ``import slicer`` in the test modules
        return _Unavailable.from_parent(parent, path=module_path)
    return None


def pytest_collection_modifyitems(config, items):
    outside = sorted({str(Path(item.path).parent) for item in items if Path(item.path).parent != HERE})
    if outside:
        raise pytest.UsageError("Testing/mrml replaces the 'slicer' package for the whole process: run it in its own "
                                f"pytest process, not together with {outside}")


@pytest.fixture(autouse=True)
def scene():
    """A cleared scene for each test (the slice views and default colour tables stay, as in Slicer)."""
    import slicer

    slicer.mrmlScene.Clear(0)
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(0)
