"""The wheel must carry every sub-package and data file a non-editable `pip install .` needs."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LIBRARY = ROOT / "ZeroShotDiffusionSeg" / "ZeroShotDiffusionSegLib"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_every_subpackage_is_listed_in_pyproject():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {"ZeroShotDiffusionSegLib." + p.parent.relative_to(LIBRARY).as_posix().replace("/", ".")
               for p in LIBRARY.rglob("__init__.py") if p.parent != LIBRARY}
    listed = set(config["packages"])
    assert on_disk | {"ZeroShotDiffusionSegLib", "ZeroShotDiffusionSegLib.Resources"} == listed
    assert config["package-dir"]["ZeroShotDiffusionSegLib.Resources"] == "ZeroShotDiffusionSeg/Resources"


def test_resources_are_found_from_the_source_tree():
    from ZeroShotDiffusionSegLib.resources import resource_path, resources_dir

    assert resources_dir() == ROOT / "ZeroShotDiffusionSeg" / "Resources"
    assert resource_path("Presets", "organs.json").is_file()
