"""A headless "Slicer" from the slicer-core wheel: a real MRML scene and the real module logics.

slicer-core has the MRML classes, the module logics and Slicer's own ``slicer/util.py`` but no
application. This wires them the way qSlicerCoreApplication does and adds only stand-ins for what
is Qt in Slicer: ``slicer.app`` (testing flag, temporary folder, a volumes-only IO manager), the
subject-hierarchy items that the Qt-side plugin logic creates for new nodes, and ``qt``/``ctk``:
real PyQt5 widgets offscreen with PythonQt's rules (``pythonqt.py``) when PyQt5 is installed, else
import-time dummies. Adapted from the example in the shared slicer-runtime folder.

The temporary folder (``slicer.app.temporaryPath``, with the test QSettings in it) is removed when the
process exits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import types

SLICE_VIEWS = ("Red", "Yellow", "Green")


def _dummy(name):
    """A class whose every attribute is again a dummy: enough for code that only builds widgets."""

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _dummy(attr)()

    meta = type("_Meta", (type,), {"__getattr__": lambda cls, attr: _dummy(attr) if not attr.startswith("__")
                                   else (_ for _ in ()).throw(AttributeError(attr)),
                                   "__or__": lambda cls, other: cls, "__ror__": lambda cls, other: cls})
    return meta(name, (), {"__init__": lambda self, *a, **k: None, "__getattr__": __getattr__,
                           "__call__": lambda self, *a, **k: None, "__bool__": lambda self: False})


def _dummy_module(name):
    module = types.ModuleType(name)
    module.__getattr__ = lambda attr: _dummy(attr) if not attr.startswith("__") else (_ for _ in ()).throw(AttributeError(attr))
    return module


def qt_available():
    try:
        import PyQt5.QtWidgets  # noqa: F401
    except ImportError:
        return False
    return True


def install_qt(settings_dir):
    """PythonQt and CTK are not in slicer-core: PyQt5 with PythonQt's rules if installed (True), else
    import-time dummies that draw and store nothing (False)."""
    if qt_available():
        import pythonqt

        pythonqt.install(settings_dir)
        return True
    for name in ("qt", "ctk"):
        sys.modules.setdefault(name, _dummy_module(name))
    return False


class VolumesIOManager:
    """Stand-in for qSlicerCoreIOManager, volumes only (what slicer.util's load/export functions call)."""

    def __init__(self, scene, volumes_logic):
        self.scene, self.volumes_logic = scene, volumes_logic

    def fileType(self, filename):
        return "VolumeFile"

    def loadNodes(self, filetype, properties, loadedNodes, userMessages=None):
        import vtk

        if filetype != "VolumeFile":
            raise NotImplementedError(f"the headless IO manager reads volumes only, not {filetype}")
        filename = properties["fileName"]
        name = properties.get("name") or os.path.basename(filename).split(".")[0]
        options = ((1 if properties.get("labelmap") else 0) | (2 if properties.get("center") else 0)
                   | (4 if properties.get("singleFile") else 0) | (8 if properties.get("autoWindowLevel", True) else 0)
                   | (16 if properties.get("discardOrientation") else 0))  # qSlicerVolumesReader's option bits
        node = self.volumes_logic.AddArchetypeVolume(filename, name, options, vtk.vtkStringArray(), userMessages)
        if node is None:
            return False
        loadedNodes.AddItem(node)
        return True

    def extractKnownExtension(self, filename, node):
        for ext in (".seg.nrrd", ".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd"):
            if filename.lower().endswith(ext):
                return ext
        return os.path.splitext(filename)[1]

    def fileWriterExtensions(self, node):
        import slicer

        # vtkMRMLVolumeArchetypeStorageNode lists no write types in slicer-core although .nrrd works.
        writable = slicer.vtkMRMLNRRDStorageNode().GetSupportedWriteFileTypes()
        return [writable.GetValue(i) for i in range(writable.GetNumberOfValues())]

    def exportNodes(self, nodeIDs, fileNames, properties, hardenTransform, userMessages=None):
        ok = True
        for node_id, filename in zip(nodeIDs, fileNames):
            node = self.scene.GetNodeByID(node_id)
            storage = node.CreateDefaultStorageNode()
            self.scene.AddNode(storage)
            try:
                storage.SetFileName(filename)
                ok = bool(storage.WriteData(node)) and ok
            finally:
                self.scene.RemoveNode(storage)
        return ok


class App:
    """The part of slicer.app that the extension's MRML code touches."""

    applicationName = "HeadlessSlicerCore"

    def __init__(self, scene, app_logic, volumes_logic, temporary_path):
        self.mrmlScene, self._app_logic, self.temporaryPath = scene, app_logic, temporary_path
        self._io = VolumesIOManager(scene, volumes_logic)
        self._module_manager = None

    def testingEnabled(self):
        return True

    def applicationLogic(self):
        return self._app_logic

    def coreIOManager(self):
        return self._io

    def layoutManager(self):
        return None

    def processEvents(self):
        if "PyQt5.QtWidgets" in sys.modules and sys.modules["PyQt5.QtWidgets"].QApplication.instance():
            sys.modules["PyQt5.QtWidgets"].QApplication.processEvents()

    def topLevelWidgets(self):  # slicer.util.mainWindow(): there is none
        return []

    def moduleManager(self):
        """ScriptedLoadableModuleWidget connects to its ``moduleAboutToBeUnloaded(QString)`` signal."""
        if self._module_manager is None:
            import qt
            from PyQt5 import QtCore

            manager_class = type(qt.QObject)("qSlicerModuleManager", (qt.QObject,), {
                "_qtBase": None, "moduleAboutToBeUnloaded": QtCore.pyqtSignal(str)})
            self._module_manager = manager_class()
        return self._module_manager

    def setOverrideCursor(self, cursor):  # slicer.util.tryWithErrorDisplay(waitCursor=True); nothing is drawn
        pass

    def restoreOverrideCursor(self):
        pass


def _observe_subject_hierarchy(scene):
    """Create/remove subject-hierarchy items with data nodes, as Slicer's Qt plugin logic does."""
    import slicer
    import vtk

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def added(caller, event, node):
        if node.IsA("vtkMRMLDisplayableNode") and not node.GetHideFromEditors():
            hierarchy = scene.GetSubjectHierarchyNode()
            if hierarchy and not hierarchy.GetItemByDataNode(node):
                hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def removed(caller, event, node):
        hierarchy = scene.GetSubjectHierarchyNode()
        item = hierarchy.GetItemByDataNode(node) if hierarchy and node is not hierarchy else 0
        if item:
            hierarchy.RemoveItem(item, False, False)

    scene.AddObserver(slicer.vtkMRMLScene.NodeAddedEvent, added)
    scene.AddObserver(slicer.vtkMRMLScene.NodeAboutToBeRemovedEvent, removed)
    return added, removed  # keep the callbacks alive


def start(runtime_dir, module_dir=None):
    """Install the scene, the logics and the stand-ins on the real ``slicer`` package; returns slicer.app.
    ``module_dir``: the folder of the scripted module (``slicer.modules.<name>.path``)."""
    temporary_path = tempfile.mkdtemp(prefix="zsd-headless-slicer-")
    atexit.register(shutil.rmtree, temporary_path, True)
    real_qt = install_qt(os.path.join(temporary_path, "settings"))
    import slicer
    import vtk

    python_slicer = os.path.join(runtime_dir, "python-slicer")  # ScriptedLoadableModule, parameterNodeWrapper, i18n
    if python_slicer not in slicer.__path__:
        slicer.__path__.append(python_slicer)
    if not real_qt:
        slicer.__getattr__ = lambda attr: _dummy(attr) if attr.startswith("q") and attr[1:2].isupper() else \
            (_ for _ in ()).throw(AttributeError(f"module 'slicer' has no attribute {attr!r}"))  # qMRML... classes

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.SetHomeDirectory(os.path.dirname(os.path.abspath(runtime_dir)))  # colour tables: <home>/<share>/ColorFiles
    app_logic.SetShareDirectory(os.path.basename(os.path.abspath(runtime_dir)))
    app_logic.GetColorLogic().SetMRMLScene(scene)
    app_logic.GetColorLogic().AddDefaultColorNodes()
    app_logic.SetSliceLogics(vtk.vtkCollection())
    app_logic.SetViewLogics(vtk.vtkCollection())

    def register(name, logic):
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        return logic

    logics = {"colors": register("Colors", slicer.vtkSlicerColorLogic()),
              "volumes": register("Volumes", slicer.vtkSlicerVolumesLogic())}
    terminologies = slicer.vtkSlicerTerminologiesModuleLogic()
    terminologies.SetModuleShareDirectory(os.path.join(runtime_dir, "terminologies"))
    logics["terminologies"] = register("Terminologies", terminologies)
    logics["segmentations"] = register("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic())
    logics["subjecthierarchy"] = register("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic())
    logics["markups"] = register("Markups", slicer.vtkSlicerMarkupsLogic())
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)
    slice_logics = []
    for view in SLICE_VIEWS:  # as a layout creates them: slice and composite nodes for setSliceViewerLayers
        slice_logic = slicer.vtkMRMLSliceLogic()
        slice_logic.SetMRMLApplicationLogic(app_logic)
        slice_logic.SetMRMLScene(scene)
        slice_logic.AddSliceNode(view)
        app_logic.GetSliceLogics().AddItem(slice_logic)
        slice_logics.append(slice_logic)

    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(**{name: types.SimpleNamespace(logic=lambda l=logic: l)
                                              for name, logic in logics.items()})
    if module_dir:  # ScriptedLoadableModuleWidget.resourcePath reads slicer.modules.<name>.path
        slicer.modules.zeroshotdiffusionseg = types.SimpleNamespace(
            path=os.path.join(module_dir, "ZeroShotDiffusionSeg.py"))
    slicer.selfTests = {}
    app = App(scene, app_logic, logics["volumes"], temporary_path)
    app.realQt = real_qt
    app.sliceLogics, app.logics = slice_logics, logics
    app.subjectHierarchyObservers = _observe_subject_hierarchy(scene)
    slicer.app = app
    return app
