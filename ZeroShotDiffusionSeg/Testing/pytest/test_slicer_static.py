"""Static checks of the Slicer extension files (Slicer itself is not available here)."""

import ast
import json
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

MODULE_DIR = Path(__file__).resolve().parents[2]
REPO = MODULE_DIR.parent
MODULE_FILE = MODULE_DIR / "ZeroShotDiffusionSeg.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "ZeroShotDiffusionSeg.ui"
LIBRARY = MODULE_DIR / "ZeroShotDiffusionSegLib"


def cmake_list(text, variable):
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not found"
    return [entry.replace("${MODULE_NAME}", "ZeroShotDiffusionSeg") for entry in match.group(1).split()]


def shipped_files():
    """Every file of the library and of Resources, as the extension must ship them."""
    files = set()
    for root in (LIBRARY, MODULE_DIR / "Resources"):
        for path in root.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.add(path.relative_to(MODULE_DIR).as_posix())
    return files


def test_cmake_lists_every_library_and_resource_file_and_nothing_else():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    scripts, resources = cmake_list(text, "MODULE_PYTHON_SCRIPTS"), cmake_list(text, "MODULE_PYTHON_RESOURCES")
    listed = scripts + resources
    assert len(listed) == len(set(listed)), "a file is listed twice"
    missing_on_disk = sorted(f for f in listed if not (MODULE_DIR / f).is_file())
    assert not missing_on_disk, f"named in CMakeLists.txt but not on disk (configure would fail): {missing_on_disk}"
    not_listed = sorted(shipped_files() - set(listed))
    assert not not_listed, f"on disk but not in CMakeLists.txt (would be missing in Slicer): {not_listed}"
    assert all(f.endswith(".py") for f in scripts) and not any(f.endswith(".py") for f in resources)
    assert "ZeroShotDiffusionSeg.py" in scripts
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text


def test_self_tests_are_registered_and_exist():
    testing = (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").read_text()
    scripts = re.findall(r"slicer_add_python_unittest\(SCRIPT \$\{CMAKE_CURRENT_SOURCE_DIR\}/(\S+)\)", testing)
    assert scripts == ["ZeroShotDiffusionSegModuleTest.py"]
    source = (MODULE_DIR / "Testing" / "Python" / scripts[0]).read_text()
    tree = ast.parse(source)
    methods = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert {"runTest", "test_run_import_threshold_undo", "test_cancel_and_wrong_input"} <= methods
    assert "add_subdirectory(Testing)" in (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "add_subdirectory(Python)" in (MODULE_DIR / "Testing" / "CMakeLists.txt").read_text()


def ui_widgets():
    tree = ET.parse(UI_FILE)  # raises on malformed XML
    root = tree.getroot()
    assert root.tag == "ui" and root.find("class").text == "ZeroShotDiffusionSeg"
    return {w.get("name"): w for w in root.iter("widget")}, root


def test_ui_has_every_widget_the_module_uses():
    widgets, _ = ui_widgets()
    source = MODULE_FILE.read_text() + (LIBRARY / "slicer" / "run_view.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used, "the module uses no widgets?"
    missing = sorted(used - set(widgets))
    assert not missing, f"used in ZeroShotDiffusionSeg.py or run_view.py but not in the .ui: {missing}"
    assert widgets["ZeroShotDiffusionSeg"].get("class") == "qMRMLWidget"


def parameter_node_fields():
    tree = ast.parse(MODULE_FILE.read_text())
    node_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ZeroShotDiffusionSegParameterNode")
    assert any(getattr(d, "id", None) == "parameterNodeWrapper" for d in node_class.decorator_list)
    return {s.target.id: ast.unparse(s.annotation) for s in node_class.body if isinstance(s, ast.AnnAssign)}


def test_ui_bindings_match_the_parameter_node_wrapper():
    widgets, root = ui_widgets()
    fields = parameter_node_fields()
    bound = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = widget.get("class")
    assert set(bound) == set(fields), f"bound but no field: {set(bound) - set(fields)}; field not bound: {set(fields) - set(bound)}"
    # What Slicer's connectors (parameterNodeWrapper/guiConnectors.py) accept: a QComboBox only with a Choice
    # annotation, and a number widget takes its range from WithinRange (without it, -inf..inf or +-2**31).
    # Testing/mrml/test_panel_binding.py runs those connectors themselves on widgets built from the .ui.
    allowed = {"str": {"QLineEdit"}, "bool": {"QCheckBox"}, "int": {"QSpinBox"}, "float": {"QDoubleSpinBox", "ctkSliderWidget"}}
    for name, cls in bound.items():
        annotation = fields[name]
        base = re.sub(r"^Annotated\[(\w+),.*\]$", r"\1", annotation)
        if cls == "QComboBox":
            assert base == "str" and "Choice(" in annotation, f"{name}: a QComboBox needs Annotated[str, Choice([...])]"
            continue
        expected = allowed.get(base, {"qMRMLNodeComboBox"})
        assert cls in expected, f"{name}: {cls} cannot be bound to {annotation}"
        if base in ("int", "float"):
            assert "WithinRange(" in annotation, f"{name}: without WithinRange the binding overwrites the .ui's range"


def test_ui_node_selectors_get_the_scene():
    widgets, root = ui_widgets()
    selectors = {name for name, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"}
    connected = {c.find("receiver").text for c in root.iter("connection")
                 if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert selectors and selectors == connected


def test_module_file_is_thin_and_python_3_12_clean():
    source = MODULE_FILE.read_text()
    assert len(source.splitlines()) < 150, "the module file wires; the Logic and the RunView live in the library"
    tree = ast.parse(source)
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "imp" not in imported, "Python 3.12 (Slicer >= 5.10) has no imp module"
    assert not {"torch", "diffusers", "transformers"} & imported, "the engine is set up on first use, never at import"
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    for suffix in ("", "ParameterNode", "Widget", "Logic", "Test"):
        assert "ZeroShotDiffusionSeg" + suffix in classes


SLICER_BOUND = {"mrml.py", "importer.py", "logic.py", "run_view.py", "scene_state.py"}  # in ZeroShotDiffusionSegLib/slicer/


def test_only_mrml_glue_imports_slicer_in_the_library():
    offenders = []
    for path in LIBRARY.rglob("*.py"):
        if path.name in SLICER_BOUND and path.parent.name == "slicer" and path.parent.parent == LIBRARY:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            if any(name.split(".")[0] in ("slicer", "qt", "ctk", "vtk") for name in names):
                offenders.append(str(path.relative_to(LIBRARY)))
    assert not offenders, f"library files importing Slicer/Qt/VTK: {offenders}"


def test_extension_metadata_agrees_across_cmake_s4ext_and_catalog():
    cmake = (REPO / "CMakeLists.txt").read_text()
    values = dict(re.findall(r'set\((EXTENSION_\w+) "(.*?)"\)', cmake))
    assert re.search(r"project\(ZeroShotDiffusionSeg\)", cmake) and "add_subdirectory(ZeroShotDiffusionSeg)" in cmake
    assert values["EXTENSION_CATEGORY"] == "Segmentation" and values["EXTENSION_DEPENDS"] == "PyTorch"
    s4ext = {}
    for line in (REPO / "ZeroShotDiffusionSeg.s4ext").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            s4ext[key] = value
    for key, variable in [("homepage", "HOMEPAGE"), ("category", "CATEGORY"), ("contributors", "CONTRIBUTORS"),
                          ("description", "DESCRIPTION"), ("iconurl", "ICONURL"), ("screenshoturls", "SCREENSHOTURLS"),
                          ("depends", "DEPENDS"), ("status", "STATUS")]:
        assert s4ext[key] == values["EXTENSION_" + variable], key
    assert "&" not in "".join(s4ext.values())
    catalog = json.loads((REPO / "ZeroShotDiffusionSeg.json").read_text())
    assert catalog["category"] == values["EXTENSION_CATEGORY"]
    assert catalog["scm_url"] == s4ext["scmurl"] and values["EXTENSION_HOMEPAGE"].startswith(catalog["scm_url"])
    assert catalog["build_dependencies"] == values["EXTENSION_DEPENDS"].split()
    assert catalog["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert values["EXTENSION_ICONURL"].endswith("ZeroShotDiffusionSeg/Resources/Icons/ZeroShotDiffusionSeg.png")
    assert (REPO / "LICENSE").is_file()


def test_screenshots_are_committed_listed_and_shown_and_the_description_is_short():
    cmake = (REPO / "CMakeLists.txt").read_text()
    values = dict(re.findall(r'set\((EXTENSION_\w+) "(.*?)"\)', cmake))
    urls = values["EXTENSION_SCREENSHOTURLS"].split()
    prefix = "https://raw.githubusercontent.com/ZeroShotDiffusionSeg/SlicerZeroShotDiffusionSeg/main/"
    assert len(urls) == 3 and all(url.startswith(prefix + "Screenshots/") for url in urls)
    readme = (REPO / "README.md").read_text()
    for url in urls:
        path = REPO / url[len(prefix):]
        with Image.open(path) as shot:  # a real rendering: large, many colours
            assert shot.format == "PNG" and shot.size[0] >= 800 and shot.size[1] >= 300
            assert len(shot.convert("RGB").getcolors(maxcolors=1 << 20)) > 200
        assert path.relative_to(REPO).as_posix() in readme.split("## Install")[0], f"{path.name} not at the README's top"
    assert (REPO / "scripts" / "make_screenshots.py").is_file()
    assert "renderings of results, not of the panel" in readme.split("## Install")[0]
    sentences = [s for s in re.split(r"(?<=[.;:])\s+(?=[A-Z])", values["EXTENSION_DESCRIPTION"]) if s]
    assert 1 <= len(sentences) <= 2 and len(values["EXTENSION_DESCRIPTION"]) <= 400
    licence = (REPO / "LICENSE").read_text().splitlines()[0]  # "MIT License"
    assert re.search(rf"code[^.\n]*{licence.split()[0]}", readme), "the README names the code's licence"


def test_icon_is_a_128_pixel_png():
    with Image.open(MODULE_DIR / "Resources" / "Icons" / "ZeroShotDiffusionSeg.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)
        assert len(icon.convert("RGB").getcolors(maxcolors=1 << 16)) > 16, "a real picture, not a flat placeholder"


NO_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("torch", "diffusers", "transformers"):
                raise ImportError("blocked: " + name)
    sys.meta_path.insert(0, Block())
    import ZeroShotDiffusionSegLib.slicer.panel, ZeroShotDiffusionSegLib.slicer.results
    import ZeroShotDiffusionSegLib.slicer.setup_state, ZeroShotDiffusionSegLib.slicer.messages
    import ZeroShotDiffusionSegLib.runners.local
    from ZeroShotDiffusionSegLib.slicer.panel import PanelSettings, build_request, create_runner
    build_request(PanelSettings(prompt="liver tumor"))
    create_runner(PanelSettings(server_url="http://gpu-box:8000"), "python")  # remote engine: no torch in Slicer
    create_runner(PanelSettings(model="random:tiny"), "python")
""")


def test_panel_code_loads_and_builds_a_request_without_torch():
    """Before the engine setup (or with a remote engine) Slicer has no torch: the panel must still work."""
    completed = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-1500:]
