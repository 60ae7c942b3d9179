"""The panel bound by Slicer's own GUI code: the real ``parameterNodeWrapper`` connectors (runtime folder, Slicer
583e9b37) on the module's real parameter node, with widgets built from ``Resources/UI/ZeroShotDiffusionSeg.ui``,
each an object of the class the file declares: real PyQt5 widgets with PythonQt's rules for the Qt classes,
stand-ins generated from the public headers for the CTK and qMRML ones (``ctk_mrml_classes.py`` names the header
paths and versions). Also every ``ui.<name>.<member>`` the module's code touches, checked against the class.
"""

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import slicer
from PyQt5 import QtWidgets

import ctk_mrml_classes
from scene_builders import oblique_volume

pytestmark = pytest.mark.skipif(not getattr(slicer.app, "realQt", False), reason="PyQt5 is not installed")

MODULE_DIR = Path(__file__).resolve().parents[2]
UI_FILE = MODULE_DIR / "Resources" / "UI" / "ZeroShotDiffusionSeg.ui"
CODE_FILES = [MODULE_DIR / "ZeroShotDiffusionSeg.py", MODULE_DIR / "ZeroShotDiffusionSegLib" / "slicer" / "run_view.py"]
PARAMETER_NAME = "SlicerParameterName"


@pytest.fixture
def ui():
    """The .ui loaded by Slicer's own slicer.util.loadUI and childWidgetVariables, on the scene."""
    widget = slicer.util.loadUI(str(UI_FILE))
    widget.setMRMLScene(slicer.mrmlScene)
    namespace = slicer.util.childWidgetVariables(widget)
    namespace.root = widget  # keeps the Qt objects alive
    yield namespace
    widget.setMRMLScene(None)
    widget.deleteLater()


@pytest.fixture
def parameters():
    import ZeroShotDiffusionSeg

    return ZeroShotDiffusionSeg.ZeroShotDiffusionSegLogic(runnerFactory=lambda settings: None).getParameterNode()


def bound_widgets(ui):
    return {w.property(PARAMETER_NAME): w for w in vars(ui).values() if w.property(PARAMETER_NAME)}


def declared_classes():
    root = ET.parse(UI_FILE).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def widget_ranges(widget):
    """What the binding could overwrite: range, decimals, the special value text shown at the minimum."""
    values = {"minimum": widget.minimum, "maximum": widget.maximum}
    if isinstance(widget, QtWidgets.QDoubleSpinBox) or type(widget).__name__ == "ctkSliderWidget":
        values["decimals"] = widget.decimals
    if isinstance(widget, QtWidgets.QAbstractSpinBox):
        values["specialValueText"] = widget.specialValueText
    return values


def test_each_widget_is_an_object_of_the_class_the_ui_declares(ui):
    for name, class_name in declared_classes().items():
        widget = getattr(ui, name)
        assert type(widget).__name__ == class_name and widget.objectName == name, name
    assert isinstance(ui.modeComboBox, QtWidgets.QComboBox) and type(ui.modeComboBox).__module__ != "PyQt5.QtWidgets"


def test_slicers_connectors_bind_every_widget_and_connect_gui_succeeds(ui, parameters):
    from slicer.parameterNodeWrapper.guiConnectors import createGuiConnector

    bound = bound_widgets(ui)
    assert sorted(bound) == sorted(parameters.allParameters), "every parameter has a widget and every widget one"
    connectors = {name: type(createGuiConnector(widget, parameters.dataType(name))).__name__
                  for name, widget in bound.items()}
    assert len(connectors) == 17
    assert connectors["mode"] == connectors["sliceAxis"] == connectors["device"] == "QComboBoxToStringableConnector"
    assert connectors["inputVolume"] == "qMRMLNodeComboBoxToNodeConnector"
    tag = parameters.connectGui(ui)
    assert tag is not None
    assert [ui.modeComboBox.itemText(i) for i in range(ui.modeComboBox.count)] == \
        ["Text prompt", "Seed points", "Unsupervised regions"]
    assert ui.modeComboBox.currentText == parameters.mode == "Text prompt"
    assert ui.batchSizeSpinBox.text == "Auto" and parameters.batchSize == 0
    parameters.disconnectGui(tag)


def test_the_ui_ranges_survive_the_binding(ui, parameters):
    numbers = {name: w for name, w in bound_widgets(ui).items() if hasattr(w, "minimum") and hasattr(w, "maximum")}
    assert sorted(numbers) == ["batchSize", "klThreshold", "minVolume", "selectionThreshold", "timestep"]
    before = {name: widget_ranges(w) for name, w in numbers.items()}
    assert before["klThreshold"] == {"minimum": 0.05, "maximum": 5.0, "decimals": 2, "specialValueText": ""}
    tag = parameters.connectGui(ui)
    after = {name: widget_ranges(w) for name, w in numbers.items()}
    assert after == before
    parameters.disconnectGui(tag)


def user_changes(ui, volume, other_volume, segmentation):
    """Per parameter: (what a user does to its widget, the value the parameter node must then hold)."""
    return {
        "inputVolume": (lambda: ui.inputVolumeSelector.setCurrentNode(other_volume), other_volume),
        "mode": (lambda: ui.modeComboBox.setCurrentIndex(1), "Seed points"),
        "prompt": (lambda: ui.promptLineEdit.setText("kidney tumor"), "kidney tumor"),
        "seedPoints": (lambda: ui.seedPointsSelector.setCurrentNode(slicer.mrmlScene.GetFirstNodeByName("S")),
                       slicer.mrmlScene.GetFirstNodeByName("S")),
        "roi": (lambda: ui.roiSelector.setCurrentNode(slicer.mrmlScene.GetFirstNodeByName("R")),
                slicer.mrmlScene.GetFirstNodeByName("R")),
        "outputSegmentation": (lambda: ui.outputSegmentationSelector.setCurrentNode(segmentation), segmentation),
        "perLesion": (lambda: ui.perLesionCheckBox.setChecked(False), False),
        "pseudoHealthy": (lambda: ui.pseudoHealthyCheckBox.setChecked(True), True),
        "klThreshold": (lambda: ui.klThresholdSpinBox.setValue(0.7), 0.7),
        "timestep": (lambda: ui.timestepSpinBox.setValue(450), 450),
        "selectionThreshold": (lambda: ui.selectionThresholdSpinBox.setValue(0.35), 0.35),
        "sliceAxis": (lambda: ui.sliceAxisComboBox.setCurrentIndex(3), "K (axial-like)"),
        "batchSize": (lambda: ui.batchSizeSpinBox.setValue(8), 8),
        "minVolume": (lambda: ui.minVolumeSpinBox.setValue(125.5), 125.5),
        "device": (lambda: ui.deviceComboBox.setCurrentIndex(2), "CPU"),
        "model": (lambda: ui.modelLineEdit.setText("/models/sd15"), "/models/sd15"),
        "serverUrl": (lambda: ui.serverUrlLineEdit.setText("http://gpu:8000"), "http://gpu:8000"),
    }


def widget_value(widget):
    if hasattr(widget, "currentNode"):
        return widget.currentNode()
    for prop in ("currentText", "checked", "value", "text"):
        if widget.metaObject().indexOfProperty(prop) >= 0 and not (prop == "text" and hasattr(widget, "value")):
            return getattr(widget, prop)
    raise AssertionError(type(widget).__name__)


def test_a_change_in_each_widget_reaches_the_node_and_a_change_in_the_node_reaches_the_widget(ui, parameters):
    volume, other_volume = oblique_volume("CT"), oblique_volume("MR")
    slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "S")
    slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "R")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    parameters.inputVolume = volume
    tag = parameters.connectGui(ui)
    bound = bound_widgets(ui)
    assert ui.inputVolumeSelector.currentNode() is volume  # node -> widget on connecting
    changes = user_changes(ui, volume, other_volume, segmentation)
    assert sorted(changes) == sorted(bound)
    defaults = {name: parameters.getValue(name) for name in bound}
    for name, (act, expected) in changes.items():
        assert parameters.getValue(name) != expected, name
        act()
        stored = getattr(type(parameters)(parameters.parameterNode), name)  # read back from the MRML node
        assert stored == pytest.approx(expected) if isinstance(expected, float) else stored == expected, name
    for name in bound:  # and back: the node's value is what each widget then shows
        parameters.setValue(name, defaults[name])
        shown = widget_value(bound[name])
        value = defaults[name]
        assert shown == pytest.approx(value) if isinstance(value, float) else shown == value, name
    parameters.disconnectGui(tag)


def module_widget():
    """The module's widget as Slicer makes it: in a module panel (entered), set up on the scene."""
    import qt
    import ZeroShotDiffusionSeg

    parent = slicer.qSlicerScriptedLoadableModuleWidget()
    parent.setLayout(qt.QVBoxLayout())
    parent.setMRMLScene(slicer.mrmlScene)
    parent.enter()
    widget = ZeroShotDiffusionSeg.ZeroShotDiffusionSegWidget(parent)
    widget.setup()
    return widget


def test_the_module_widget_sets_up_binds_enters_and_exits():
    volume = oblique_volume()
    widget = module_widget()
    parameters = widget._parameterNode
    assert widget._guiTag is not None and parameters.inputVolume is volume
    assert widget.ui.inputVolumeSelector.currentNode() is volume
    widget.parent.exit()
    widget.exit()
    assert widget._guiTag is None and not parameters._parameterGUIs, "exit() leaves the panel bound"
    widget.ui.promptLineEdit.setText("not stored while the module is not shown")
    assert parameters.prompt == ""
    widget.parent.enter()
    widget.enter()
    assert len(widget._parameterNode._parameterGUIs) == 1 and widget.ui.promptLineEdit.text == ""
    widget.ui.promptLineEdit.setText("liver tumor")
    assert widget.logic.getParameterNode().prompt == "liver tumor"
    bound = widget._parameterNode
    widget.cleanup()
    assert not bound._parameterGUIs, "cleanup() leaves the widgets bound to a node that outlives them"


# --- every ui.<name>.<member> of the module's code, against the class the .ui declares -------------------------

def _ui_widget(node):
    """'name' for an expression ``self.ui.name``, else None."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui":
        return node.attr
    return None


def used_members():
    """{(widget name, member)} from ``self.ui.<name>.<member>`` in the module file and run_view.py (also through a
    local name such as ``combo, slider = self.ui.overlayComboBox, self.ui.overlayOpacitySlider``), with
    ``.connect("signal(args)", ...)`` recorded as the signal signature."""
    found = set()
    for path in CODE_FILES:
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef):
                continue
            aliases = {}
            for node in ast.walk(function):
                if isinstance(node, ast.Assign):
                    targets = node.targets[0].elts if isinstance(node.targets[0], ast.Tuple) else node.targets
                    values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                    for target, value in zip(targets, values):
                        if isinstance(target, ast.Name) and _ui_widget(value):
                            aliases[target.id] = _ui_widget(value)
            for node in ast.walk(function):
                if not isinstance(node, ast.Attribute):
                    continue
                widget = _ui_widget(node.value) or (aliases.get(node.value.id) if isinstance(node.value, ast.Name) else None)
                if widget is None:
                    continue
                if node.attr in ("connect", "disconnect"):  # PythonQt's: the signal they name is checked instead
                    call = next((c for c in ast.walk(function) if isinstance(c, ast.Call) and c.func is node), None)
                    if call is not None and call.args and isinstance(call.args[0], ast.Constant):
                        found.add((widget, "signal:" + call.args[0].value))
                else:
                    found.add((widget, node.attr))
    return found


def member_exists(class_name, member):
    """Whether ``member`` is a member of the real class: PyQt5's for Qt classes, the recorded header lines
    (and the Qt base class) for the CTK and qMRML ones."""
    from pythonqt import _signature

    recorded = ctk_mrml_classes.HEADERS.get(class_name)
    base = getattr(QtWidgets, recorded["base"] if recorded else class_name)
    if member.startswith("signal:"):
        signature = _signature(member[len("signal:"):])
        if recorded:
            return any(f"{n}({','.join(a)})" == signature for n, a, _ in ctk_mrml_classes.declared_functions(class_name, "signals"))
        return base.staticMetaObject.indexOfSignal(signature) >= 0
    if recorded:
        names = {n for n, _ in ctk_mrml_classes.declared_properties(class_name)}
        names |= {n for section in ("methods", "signals") for n, _, _ in ctk_mrml_classes.declared_functions(class_name, section)}
        if member in names:
            return True
    return hasattr(base, member) or base.staticMetaObject.indexOfProperty(member) >= 0


def test_every_widget_member_the_code_uses_exists_on_the_declared_class():
    classes = declared_classes()
    used = used_members()
    missing_widgets = sorted({name for name, _ in used} - set(classes))
    assert not missing_widgets, f"used by the code but not in the .ui: {missing_widgets}"
    wrong = sorted(f"{name}.{member} ({classes[name]})" for name, member in used if not member_exists(classes[name], member))
    assert not wrong, f"not members of the class the .ui declares: {wrong}"
    assert len(used) >= 35 and len({name for name, _ in used}) >= 14


def test_the_stand_ins_are_typed_as_their_headers():
    """Each recorded Q_PROPERTY and signal is on the stand-in with the header's type; each method is callable."""
    checked = 0
    for class_name, cls in ctk_mrml_classes.classes().items():
        meta = cls.staticMetaObject
        for name, cpp in ctk_mrml_classes.declared_properties(class_name):
            index = meta.indexOfProperty(name)
            assert index >= 0, f"{class_name}.{name}"
            expected = ctk_mrml_classes.python_type(cpp)
            type_name = meta.property(index).typeName()
            assert type_name == {int: "int", float: "double", bool: "bool", str: "QString", object: "PyQt_PyObject",
                                 "QStringList": "QStringList"}[expected], f"{class_name}.{name}: {type_name}"
            checked += 1
        for name, arguments, _ in ctk_mrml_classes.declared_functions(class_name, "signals"):
            kinds = ",".join("PyQt_PyObject" if a.endswith("*") else {"QString": "QString", "bool": "bool", "int": "int",
                                                                      "double": "double"}[a] for a in arguments)
            assert meta.indexOfSignal(f"{name}({kinds})") >= 0, f"{class_name}.{name}({kinds})"
            checked += 1
        for name, _, required in ctk_mrml_classes.declared_functions(class_name, "methods"):
            assert callable(getattr(cls, name, None)), f"{class_name}.{name}"
            checked += 1
    assert checked >= 70
