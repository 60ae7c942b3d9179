"""Qt as Slicer's Python sees it (PythonQt), on real PyQt5 widgets rendered offscreen.

Slicer's ``qt`` module is PythonQt, which wraps Qt 5.15 with a few rules that Slicer's own Python code
(``slicer.util``, ``ScriptedLoadableModule``, ``parameterNodeWrapper``) and the module's code rely on:

- a Qt property is an attribute: ``combo.currentText`` reads it, ``button.text = "x"`` writes it through
  Qt's property system; a property shadows a method of the same name (``lineEdit.text`` is a str);
- ``obj.name`` is the objectName; ``obj.connect("activated(int)", callable)`` connects by signature;
- ``type(widget) is qt.QComboBox`` for a combo box made from Python or from a ``.ui``, and
  ``isinstance`` follows Qt's class hierarchy.

Here every ``qt.<Class>`` that is a QObject is the real PyQt5 class with those rules added (nothing else is
changed: its methods, signals, value clamping and rounding are Qt's own). Other names (``qt.Qt``,
``qt.QKeySequence``, ...) are PyQt5's. ``ctk`` and slicer's ``qMRML...`` classes are stand-ins typed from
their public headers (``ctk_mrml_classes``). ``qt.QUiLoader`` is ``ui_loader.UiLoader``.

A connection by signature that names no signal of the class raises, as a misspelt one does not in Slicer
(PythonQt only prints a warning): that is the point of running the panel here.
"""

from __future__ import annotations

import os
import re
import sys
import types

from PyQt5 import QtCore, QtGui, QtWidgets

_FACADES = {}


class PythonQtMeta(type(QtCore.QObject)):
    """``isinstance(x, qt.QWidget)`` follows Qt's hierarchy, as PythonQt's wrappers do."""

    def __instancecheck__(cls, obj):
        base = cls.__dict__.get("_qtBase")
        return isinstance(obj, base) if base is not None else type.__instancecheck__(cls, obj)

    def __subclasscheck__(cls, other):
        base = cls.__dict__.get("_qtBase")
        return issubclass(other, base) if base is not None else type.__subclasscheck__(cls, other)


def _signature(text):
    return bytes(QtCore.QMetaObject.normalizedSignature(text)).decode()


def qt_property(obj, name):
    """The QMetaProperty ``name`` of ``obj``'s class, or None."""
    meta = QtCore.QObject.metaObject(obj)
    index = meta.indexOfProperty(name)
    return meta.property(index) if index >= 0 else None


def qt_signal(obj, signature):
    """The bound PyQt5 signal for a PythonQt-style signature ("activated(int)"); KeyError if the class has none.
    A pointer argument (``vtkMRMLNode*``) matches a stand-in's Python-object argument."""
    normalized = _signature(signature)
    meta = QtCore.QObject.metaObject(obj)
    index = meta.indexOfSignal(normalized)
    if index < 0:
        normalized = re.sub(r"\w+\*", "PyQt_PyObject", normalized)
        index = meta.indexOfSignal(normalized)
    if index < 0:
        raise KeyError(f"{meta.className()} has no signal {signature!r}")
    name, _, arguments = normalized.partition("(")
    arguments = arguments.rstrip(")")
    signal = QtCore.QObject.__getattribute__(obj, name)
    overloads = sum(1 for i in range(meta.methodCount()) if meta.method(i).methodType() == QtCore.QMetaMethod.Signal
                    and bytes(meta.method(i).name()).decode() == name)
    if overloads > 1:  # pick the overload the signature names
        kinds = [_python_type(a) for a in arguments.split(",")] if arguments else []
        signal = signal[tuple(kinds)] if len(kinds) > 1 else signal[kinds[0]] if kinds else signal[()]
    return signal


def _python_type(cpp):
    return {"int": int, "double": float, "bool": bool, "QString": str, "PyQt_PyObject": object}.get(cpp.strip(), cpp.strip())


class PythonQtObject:
    """The PythonQt rules on top of a PyQt5 class (see the module docstring)."""

    def __bool__(self):  # PythonQt: a wrapper is true while its object exists (PyQt5: an empty QComboBox is false)
        return True

    def __getattribute__(self, name):
        if not name.startswith("_"):
            prop = qt_property(self, name)
            if prop is not None:
                return prop.read(self)
            if name == "name":
                return QtCore.QObject.objectName(self)
        return super().__getattribute__(name)

    def __setattr__(self, name, value):
        prop = qt_property(self, name) if not name.startswith("_") else None
        if prop is not None:
            if isinstance(value, tuple):  # PythonQt converts a sequence to a QStringList / QVariantList
                value = list(value)
            if not prop.write(self, value):
                raise AttributeError(f"cannot set {type(self).__name__}.{name} to {value!r}")
            return
        if name == "name":
            QtCore.QObject.setObjectName(self, value)
            return
        super().__setattr__(name, value)

    def connect(self, signature, slot):
        qt_signal(self, signature).connect(slot)
        return True

    def disconnect(self, signature, slot=None):
        signal = qt_signal(self, signature)
        signal.disconnect(slot) if slot is not None else signal.disconnect()
        return True

    def findChildren(self, cls, name=""):
        base = getattr(cls, "_qtBase", cls)
        return QtCore.QObject.findChildren(self, base, name) if name else QtCore.QObject.findChildren(self, base)


def facade(base, namespace=None, name=None):
    """``base`` (a PyQt5 QObject class) with PythonQt's rules, one class per base."""
    if base not in _FACADES:
        _FACADES[base] = PythonQtMeta(name or base.__name__, (PythonQtObject, base),
                                      {"_qtBase": base, **(namespace or {})})
    return _FACADES[base]


def _qt_getattr(name):
    if name.startswith("__"):
        raise AttributeError(name)
    if name == "QUiLoader":
        from ui_loader import UiLoader

        return UiLoader
    for module in (QtWidgets, QtCore, QtGui):
        value = getattr(module, name, None)
        if value is None:
            continue
        if isinstance(value, type) and issubclass(value, QtCore.QObject):
            return facade(value)
        return value
    raise AttributeError(f"module 'qt' has no attribute {name!r}")


_application = None


def install(settings_dir):
    """Make ``qt``, ``ctk`` and slicer's q-classes these; start an offscreen QApplication; QSettings under
    ``settings_dir`` (never the user's). Returns the application."""
    global _application
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    _application = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["headless-slicer"])
    QtCore.QCoreApplication.setOrganizationName("ZeroShotDiffusionSegTests")
    QtCore.QSettings.setDefaultFormat(QtCore.QSettings.IniFormat)
    QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, settings_dir)
    qt = types.ModuleType("qt")
    qt.__getattr__ = _qt_getattr
    sys.modules["qt"] = qt
    import ctk_mrml_classes

    sys.modules["ctk"] = ctk_mrml_classes.ctk_module()
    import slicer

    for name, cls in ctk_mrml_classes.slicer_classes().items():
        setattr(slicer, name, cls)
    return _application
