"""Stand-ins for the CTK and qMRML widget classes of the panel's .ui, typed from their public headers.

No wheel has CTK or Slicer's MRML widgets, so these are written here, on real PyQt5 base classes, from the
declarations below, copied verbatim from the public headers named with each (CTK at the commit that Slicer
583e9b37 builds, Slicer at 583e9b37, 5.13 preview; CTK Apache-2.0, Slicer BSD-style licence). Each stand-in's
Qt properties and signals are *generated* from those lines, and its methods are checked against them
(``test_panel_binding.py``), so a member the code uses that the real class lacks fails here too.
Behaviour that the binding and the panel depend on is Qt's or reproduced: the slider's value is a real
QDoubleSpinBox's (clamped to the range, rounded to ``decimals``), the node combo box lists the scene's nodes of
``nodeTypes``, picks the first one when None is not allowed, and emits ``currentNodeChanged`` on a change.
"""

from __future__ import annotations

import re
import types

from PyQt5 import QtCore, QtWidgets, sip

from pythonqt import PythonQtMeta, PythonQtObject

CTK = ("commontk/CTK", "5056664a20a3d0a393bb6d91f040525581e0dcdf")
SLICER = ("Slicer/Slicer", "583e9b37d5")

HEADERS = {
    "ctkSliderWidget": {
        "source": CTK, "header": "Libs/Widgets/ctkSliderWidget.h", "base": "QWidget",
        "properties": """
  Q_PROPERTY(int decimals READ decimals WRITE setDecimals NOTIFY decimalsChanged)
  Q_PROPERTY(double singleStep READ singleStep WRITE setSingleStep)
  Q_PROPERTY(double pageStep READ pageStep WRITE setPageStep)
  Q_PROPERTY(double minimum READ minimum WRITE setMinimum)
  Q_PROPERTY(double maximum READ maximum WRITE setMaximum)
  Q_PROPERTY(double value READ value WRITE setValue)
  Q_PROPERTY(QString prefix READ prefix WRITE setPrefix)
  Q_PROPERTY(QString suffix READ suffix WRITE setSuffix)
  Q_PROPERTY(double tickInterval READ tickInterval WRITE setTickInterval)
  Q_PROPERTY(QSlider::TickPosition tickPosition READ tickPosition WRITE setTickPosition)
  Q_PROPERTY(SynchronizeSiblings synchronizeSiblings READ synchronizeSiblings WRITE setSynchronizeSiblings)
  Q_PROPERTY(Qt::Alignment spinBoxAlignment READ spinBoxAlignment WRITE setSpinBoxAlignment)
  Q_PROPERTY(bool tracking READ hasTracking WRITE setTracking)
  Q_PROPERTY(bool spinBoxVisible READ isSpinBoxVisible WRITE setSpinBoxVisible);
  Q_PROPERTY(bool popupSlider READ hasPopupSlider WRITE setPopupSlider);
  Q_PROPERTY(bool invertedAppearance READ invertedAppearance WRITE setInvertedAppearance)
  Q_PROPERTY(bool invertedControls READ invertedControls WRITE setInvertedControls)""",
        "methods": """
  virtual void setMinimum(double minimum);
  virtual void setMaximum(double maximum);
  virtual void setRange(double min, double max);
  virtual void setSingleStep(double step);
  virtual void setPageStep(double step);
  virtual void reset();
  virtual void setValue(double value);
  virtual void setDecimals(int decimals);""",
        "signals": """
  void valueChanged(double value);
  void valueIsChanging(double value);
  void decimalsChanged(int decimals);""",
    },
    "ctkCollapsibleButton": {
        "source": CTK, "header": "Libs/Widgets/ctkCollapsibleButton.h", "base": "QAbstractButton",
        "properties": """
  Q_PROPERTY(bool collapsed READ collapsed WRITE setCollapsed NOTIFY contentsCollapsed)
  Q_PROPERTY(int collapsedHeight READ collapsedHeight WRITE setCollapsedHeight)
  Q_PROPERTY(bool flat READ isFlat WRITE setFlat)
  Q_PROPERTY(int contentsLineWidth READ contentsLineWidth WRITE setContentsLineWidth)
  Q_PROPERTY(int contentsMidLineWidth READ contentsMidLineWidth WRITE setContentsMidLineWidth)
  Q_PROPERTY(Qt::Alignment buttonTextAlignment READ buttonTextAlignment WRITE setButtonTextAlignment)
  Q_PROPERTY(Qt::Alignment indicatorAlignment READ indicatorAlignment WRITE setIndicatorAlignment)""",
        "methods": """
  void setCollapsed(bool);
  bool collapsed()const;""",
        "signals": """
  void contentsCollapsed(bool);""",
    },
    "qMRMLWidget": {
        "source": SLICER, "header": "Libs/MRML/Widgets/qMRMLWidget.h", "base": "QWidget",
        "properties": "",
        "methods": """
  Q_INVOKABLE vtkMRMLScene* mrmlScene() const;
  virtual void setMRMLScene(vtkMRMLScene* newScene);""",
        "signals": """
  void mrmlSceneChanged(vtkMRMLScene*);""",
    },
    "qSlicerScriptedLoadableModuleWidget": {  # the parent a scripted module's widget gets; properties of its base
        "source": SLICER, "header": "Base/QTGUI/qSlicerAbstractModuleWidget.h", "base": "QWidget",
        "properties": """
  Q_PROPERTY(bool isEntered READ isEntered);""",
        "methods": """
  Q_INVOKABLE virtual void enter();
  Q_INVOKABLE virtual void exit();
  bool isEntered() const;""",
        "signals": "",
    },
    "qMRMLNodeComboBox": {
        "source": SLICER, "header": "Libs/MRML/Widgets/qMRMLNodeComboBox.h", "base": "QWidget",
        "properties": """
  Q_PROPERTY(QString currentNodeID READ currentNodeID WRITE setCurrentNodeID NOTIFY currentNodeIDChanged DESIGNABLE false)
  Q_PROPERTY(QStringList nodeTypes READ nodeTypes WRITE setNodeTypes)
  Q_PROPERTY(bool showHidden READ showHidden WRITE setShowHidden)
  Q_PROPERTY(bool showChildNodeTypes READ showChildNodeTypes WRITE setShowChildNodeTypes)
  Q_PROPERTY(QStringList hideChildNodeTypes READ hideChildNodeTypes WRITE setHideChildNodeTypes)
  Q_PROPERTY(QString baseName READ baseName WRITE setBaseName)
  Q_PROPERTY(bool noneEnabled READ noneEnabled WRITE setNoneEnabled)
  Q_PROPERTY(bool addEnabled READ addEnabled WRITE setAddEnabled)
  Q_PROPERTY(bool removeEnabled READ removeEnabled WRITE setRemoveEnabled)
  Q_PROPERTY(bool editEnabled READ editEnabled WRITE setEditEnabled)
  Q_PROPERTY(bool renameEnabled READ renameEnabled WRITE setRenameEnabled)
  Q_PROPERTY(QString interactionNodeSingletonTag READ interactionNodeSingletonTag WRITE setInteractionNodeSingletonTag)
  Q_PROPERTY(bool selectNodeUponCreation READ selectNodeUponCreation WRITE setSelectNodeUponCreation)
  Q_PROPERTY(QString noneDisplay READ noneDisplay WRITE setNoneDisplay)""",
        "methods": """
  Q_INVOKABLE vtkMRMLScene* mrmlScene() const;
  Q_INVOKABLE int nodeCount() const;
  Q_INVOKABLE vtkMRMLNode* nodeFromIndex(int index) const;
  Q_INVOKABLE vtkMRMLNode* currentNode() const;
  QString currentNodeID() const;
  QList<vtkMRMLNode*> nodes() const;
  virtual void setMRMLScene(vtkMRMLScene* scene);
  void setCurrentNode(vtkMRMLNode* node);
  void setCurrentNode(const QString& nodeID);
  void setCurrentNodeID(const QString& nodeID);
  void setCurrentNodeIndex(int index);""",
        "signals": """
  void currentNodeChanged(vtkMRMLNode* node);
  void currentNodeIDChanged(const QString& id);
  void nodeActivated(vtkMRMLNode* node);
  void currentNodeChanged(bool validNode);
  void nodeAdded(vtkMRMLNode* node);
  void nodeAddedByUser(vtkMRMLNode* node);
  void nodeAddedByUserAction(vtkMRMLNode* node);
  void nodeAboutToBeRemoved(vtkMRMLNode* node);
  void currentNodeRenamed(const QString& newName);
  void nodeAboutToBeEdited(vtkMRMLNode* node);""",
    },
}

_PROPERTY = re.compile(r"Q_PROPERTY\((?P<type>[\w:]+\s*\*?)\s+(?P<name>\w+)\s+READ")
_FUNCTION = re.compile(r"(?:virtual\s+|static\s+|inline\s+|Q_INVOKABLE\s+)*(?P<ret>[\w:<>*\s]+?)\s*\b(?P<name>\w+)"
                       r"\((?P<args>[^)]*)\)\s*(?P<const>const)?\s*;")


def declared_properties(cls_name):
    """[(name, C++ type)] of the class's recorded Q_PROPERTY lines."""
    return [(m["name"], m["type"].replace(" ", "")) for m in _PROPERTY.finditer(HEADERS[cls_name]["properties"])]


def _arguments(text):
    return [a.strip() for a in text.split(",") if a.strip()]


def _argument_type(argument):
    argument = argument.split("=")[0].strip()
    argument = re.sub(r"^const\s+", "", argument)
    match = re.match(r"([\w:<>]+\s*[*&]?)\s*\w*$", argument)
    return (match.group(1) if match else argument).replace(" ", "").rstrip("&")


def declared_functions(cls_name, section):
    """[(name, [C++ argument types], minimum argument count)] of the recorded methods or signals."""
    found = []
    for match in _FUNCTION.finditer(HEADERS[cls_name][section]):
        arguments = _arguments(match["args"])
        required = sum(1 for a in arguments if "=" not in a)
        found.append((match["name"], [_argument_type(a) for a in arguments], required))
    return found


_PYTHON_TYPES = {"int": int, "double": float, "bool": bool, "QString": str, "QStringList": "QStringList"}


def python_type(cpp):
    """The PyQt5 type of a property or signal argument: pointers to VTK objects travel as Python objects."""
    if cpp.endswith("*"):
        return object
    return _PYTHON_TYPES.get(cpp, int)  # enums and flags (Qt::Alignment, QSlider::TickPosition, ...) are ints


def _stored_property(name, cpp, default):
    key = f"_{name}"

    def getter(self):
        return getattr(self, key, default)

    def setter(self, value):
        object.__setattr__(self, key, value)

    return QtCore.pyqtProperty(python_type(cpp), getter, setter)


def _signals(cls_name):
    by_name = {}
    for name, arguments, _ in declared_functions(cls_name, "signals"):
        by_name.setdefault(name, []).append([python_type(a) for a in arguments])
    return {name: QtCore.pyqtSignal(*overloads) if len(overloads) > 1 else QtCore.pyqtSignal(*overloads[0])
            for name, overloads in by_name.items()}


def _build(cls_name, base, behaviour):
    """The stand-in: ``base`` + the recorded signals + stored properties, with ``behaviour``'s members on top."""
    namespace = dict(_signals(cls_name))
    defaults = {"bool": False, "int": 0, "double": 0.0, "QString": "", "QStringList": []}
    for name, cpp in declared_properties(cls_name):
        if not hasattr(behaviour, name):
            namespace[name] = _stored_property(name, cpp, defaults.get(cpp, 0))
    members = {}
    for klass in reversed(behaviour.__mro__[:-1]):  # the behaviour classes' own members, base first
        members.update(vars(klass))
    for name, value in members.items():
        if not name.startswith("__") or name == "__init__":
            namespace[name] = value
    namespace["_qtBase"] = None  # a class of its own: type(widget) is this class
    return PythonQtMeta(cls_name, (PythonQtObject, base), namespace)


class _SliderBehaviour:
    """ctkSliderWidget: a ctkDoubleSpinBox and a slider kept in step; the value is a real QDoubleSpinBox's."""

    def __init__(self, parent=None):
        QtWidgets.QWidget.__init__(self, parent)
        spin = QtWidgets.QDoubleSpinBox(self)
        spin.setRange(0.0, 99.0)  # ctkSliderWidget's defaults: 0..99, 2 decimals, step 1
        self._spin = spin
        spin.valueChanged.connect(QtCore.QObject.__getattribute__(self, "valueChanged").emit)

    def _get(name):
        return lambda self: getattr(object.__getattribute__(self, "_spin"), name)()

    def _set(name):
        return lambda self, value: getattr(object.__getattribute__(self, "_spin"), name)(value)

    decimals = QtCore.pyqtProperty(int, _get("decimals"), _set("setDecimals"))
    singleStep = QtCore.pyqtProperty(float, _get("singleStep"), _set("setSingleStep"))
    minimum = QtCore.pyqtProperty(float, _get("minimum"), _set("setMinimum"))
    maximum = QtCore.pyqtProperty(float, _get("maximum"), _set("setMaximum"))
    value = QtCore.pyqtProperty(float, _get("value"), _set("setValue"))
    prefix = QtCore.pyqtProperty(str, _get("prefix"), _set("setPrefix"))
    suffix = QtCore.pyqtProperty(str, _get("suffix"), _set("setSuffix"))

    def setMinimum(self, minimum):
        self._spin.setMinimum(minimum)

    def setMaximum(self, maximum):
        self._spin.setMaximum(maximum)

    def setRange(self, minimum, maximum):
        self._spin.setRange(minimum, maximum)

    def setSingleStep(self, step):
        self._spin.setSingleStep(step)

    def setPageStep(self, step):
        object.__setattr__(self, "_pageStep", step)

    def reset(self):
        self._spin.setValue(0.0)

    def setValue(self, value):
        self._spin.setValue(value)

    def setDecimals(self, decimals):
        self._spin.setDecimals(decimals)

    del _get, _set


class _CollapsibleButtonBehaviour:
    def setCollapsed(self, collapsed):
        changed = bool(collapsed) != self.collapsed
        object.__setattr__(self, "_collapsed", bool(collapsed))
        if changed:
            QtCore.QObject.__getattribute__(self, "contentsCollapsed").emit(bool(collapsed))

    def paintEvent(self, event):  # QAbstractButton's one abstract member; nothing is drawn offscreen
        pass

    collapsed = QtCore.pyqtProperty(bool, lambda self: getattr(self, "_collapsed", False),
                                    lambda self, value: self.setCollapsed(value))


class _MRMLWidgetBehaviour:
    def mrmlScene(self):
        return getattr(self, "_scene", None)

    def setMRMLScene(self, scene):
        if scene is self.mrmlScene():
            return
        object.__setattr__(self, "_scene", scene)
        QtCore.QObject.__getattribute__(self, "mrmlSceneChanged").emit(scene)


class _ModuleWidgetBehaviour(_MRMLWidgetBehaviour):
    """What Slicer's module panel does around a scripted module widget: enter() and exit() set isEntered
    (qSlicerAbstractModuleWidget) before the Python widget's own enter()/exit() run."""

    def enter(self):
        object.__setattr__(self, "_isEntered", True)

    def exit(self):
        object.__setattr__(self, "_isEntered", False)

    def isEntered(self):
        return getattr(self, "_isEntered", False)

    isEntered = QtCore.pyqtProperty(bool, isEntered)
    mrmlSceneChanged = QtCore.pyqtSignal(object)  # qSlicerWidget's, as qMRMLWidget's


class _NodeComboBoxBehaviour:
    """The scene's nodes of ``nodeTypes`` (exact classes unless showChildNodeTypes), the current one, and the
    signals qMRMLNodeComboBox emits when it changes; without None, the first node is chosen as soon as one exists."""

    def mrmlScene(self):
        return getattr(self, "_scene", None)

    def setMRMLScene(self, scene):
        previous = self.mrmlScene()
        if scene is previous:
            return
        for tag in getattr(self, "_observations", ()):
            previous.RemoveObserver(tag)
        object.__setattr__(self, "_scene", scene)
        tags = []
        if scene is not None:
            alive = lambda *a: None if sip.isdeleted(self) else self._sceneChanged()  # noqa: E731
            tags = [scene.AddObserver(scene.NodeAddedEvent, alive), scene.AddObserver(scene.NodeRemovedEvent, alive)]
            QtCore.QObject.__getattribute__(self, "destroyed").connect(
                lambda *a, scene=scene, tags=tags: [scene.RemoveObserver(tag) for tag in tags])
        object.__setattr__(self, "_observations", tags)
        self._sceneChanged()

    def _matches(self, node):
        types_ = self.nodeTypes
        if self.showChildNodeTypes:
            return any(node.IsA(t) for t in types_)
        return node.GetClassName() in types_

    def nodes(self):
        scene = self.mrmlScene()
        if scene is None:
            return []
        all_nodes = scene.GetNodes()
        found = [all_nodes.GetItemAsObject(i) for i in range(all_nodes.GetNumberOfItems())]
        return [n for n in found if self._matches(n) and (self.showHidden or not n.GetHideFromEditors())]

    def nodeCount(self):
        return len(self.nodes())

    def nodeFromIndex(self, index):
        nodes = self.nodes()
        return nodes[index] if 0 <= index < len(nodes) else None

    def currentNode(self):
        node = getattr(self, "_current", None)
        return node if node is not None and node.GetScene() is not None else None

    def currentNodeID(self):
        node = self.currentNode()
        return node.GetID() if node is not None else ""

    def setCurrentNode(self, node):
        if isinstance(node, str):
            node = self.mrmlScene().GetNodeByID(node) if node and self.mrmlScene() else None
        if node is not None and not self._matches(node):
            node = None  # the real widget cannot show a node of another type
        if node is self.currentNode():
            return
        object.__setattr__(self, "_current", node)
        QtCore.QObject.__getattribute__(self, "currentNodeChanged")[object].emit(node)
        QtCore.QObject.__getattribute__(self, "currentNodeChanged")[bool].emit(node is not None)
        QtCore.QObject.__getattribute__(self, "currentNodeIDChanged").emit(node.GetID() if node else "")

    def setCurrentNodeID(self, node_id):
        self.setCurrentNode(node_id)

    def setCurrentNodeIndex(self, index):
        self.setCurrentNode(self.nodeFromIndex(index))

    def _sceneChanged(self):
        current = getattr(self, "_current", None)
        if current is not None and current.GetScene() is None:
            object.__setattr__(self, "_current", None)
            self.setCurrentNode(None)
            object.__setattr__(self, "_current", None)
        if self.currentNode() is None and not self.noneEnabled and self.nodes():
            self.setCurrentNode(self.nodes()[0])

    nodeTypes = QtCore.pyqtProperty("QStringList", lambda self: getattr(self, "_nodeTypes", []),
                                    lambda self, value: object.__setattr__(self, "_nodeTypes", list(value)))
    currentNodeID = QtCore.pyqtProperty(str, lambda self: _NodeComboBoxBehaviour.currentNodeID(self),
                                        lambda self, value: self.setCurrentNode(value))


class _Unrecorded:
    """A CTK/qMRML class that Slicer's connectors name but the panel does not use: identity only."""

    def __init__(self, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} is not recorded from its header in ctk_mrml_classes.py")


_CLASSES = {}


def classes():
    if not _CLASSES:
        _CLASSES.update(
            ctkSliderWidget=_build("ctkSliderWidget", QtWidgets.QWidget, _SliderBehaviour),
            ctkCollapsibleButton=_build("ctkCollapsibleButton", QtWidgets.QAbstractButton, _CollapsibleButtonBehaviour),
            qMRMLWidget=_build("qMRMLWidget", QtWidgets.QWidget, _MRMLWidgetBehaviour),
            qMRMLNodeComboBox=_build("qMRMLNodeComboBox", QtWidgets.QWidget, _NodeComboBoxBehaviour),
            qSlicerScriptedLoadableModuleWidget=_build("qSlicerScriptedLoadableModuleWidget", QtWidgets.QWidget,
                                                       _ModuleWidgetBehaviour),
        )
    return _CLASSES


def ctk_module():
    module = types.ModuleType("ctk")

    def getattr_(name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name in classes():
            return classes()[name]
        if name.startswith("ctk"):
            return type(name, (_Unrecorded,), {})
        raise AttributeError(f"module 'ctk' has no attribute {name!r}")

    module.__getattr__ = getattr_
    return module


def slicer_classes():
    """slicer.qMRML... names: the recorded ones, and identity-only classes for the others Slicer's connectors name."""
    found = {name: cls for name, cls in classes().items() if name.startswith(("qMRML", "qSlicer"))}
    for name in ("qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLRangeWidget"):
        found[name] = type(name, (_Unrecorded,), {})
    return found
