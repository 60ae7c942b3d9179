"""The headless Slicer of Testing/mrml leaves nothing in the temporary folder when its process ends."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MRML_DIR = Path(__file__).resolve().parents[1] / "mrml"
MODULE_DIR = Path(__file__).resolve().parents[2]
RUNTIME = Path(os.environ.get("ZSD_SLICER_RUNTIME") or MODULE_DIR.parents[1] / "shared" / "slicer-runtime")

START = textwrap.dedent("""
    import sys
    sys.path[:0] = [sys.argv[1], sys.argv[2]]
    import headless_slicer
    app = headless_slicer.start(sys.argv[3], sys.argv[2])
    import os, qt
    qt.QSettings().setValue("ZeroShotDiffusionSeg/licence/x", "accepted")  # what the setup hooks write
    qt.QSettings().sync()
    open(os.path.join(app.temporaryPath, "input.nrrd"), "w").write("a work file")
    print(app.temporaryPath)
""")


@pytest.mark.skipif(not (RUNTIME / "python-slicer" / "ScriptedLoadableModule.py").is_file(),
                    reason=f"no Slicer runtime files at {RUNTIME}")
def test_the_headless_slicer_removes_its_temporary_folder_at_exit(tmp_path):
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    env = dict(os.environ, TMPDIR=str(tmp_path), QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-c", START, str(MRML_DIR), str(MODULE_DIR), str(RUNTIME)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert folder.parent == tmp_path and folder.name.startswith("zsd-headless-slicer-")
    assert not folder.exists(), "the headless Slicer's temporary folder outlived its process"
    assert not list(tmp_path.glob("zsd-headless-slicer-*"))
