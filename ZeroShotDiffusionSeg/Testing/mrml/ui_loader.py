"""``qt.QUiLoader`` for the headless panel: a Qt Designer .ui file built from the ``qt``/``ctk``/``slicer`` classes.

What ``slicer.util.loadUI`` gets from QUiLoader in Slicer: each ``<widget>`` an object of the class the file
declares (custom widgets only if listed under ``<customwidgets>``), parented as in the file and laid out
by its layouts, every ``<property>`` set (a designable one must exist on the class: a misspelt property
raises here, where QUiLoader would only warn), dynamic ones (``stdset="0"``, e.g. ``SlicerParameterName``)
set with ``setProperty``, and the ``<connections>`` made (a signal or slot the classes lack raises).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from PyQt5 import QtCore, QtWidgets

from pythonqt import qt_signal

_FORM_ROLES = {"0": QtWidgets.QFormLayout.LabelRole, "1": QtWidgets.QFormLayout.FieldRole}


def widget_class(name, custom):
    """The class a .ui names: Qt's from ``qt``, the declared custom widgets from ``ctk`` or ``slicer``."""
    import ctk
    import qt
    import slicer

    if name in custom:
        return getattr(slicer if name.startswith("qMRML") else ctk, name)
    if not name.startswith("Q"):
        raise KeyError(f"{name} is neither a Qt class nor declared under <customwidgets>")
    return getattr(qt, name)


def property_value(element, owner_class=None):
    """The Python value of a .ui ``<property>``'s child element."""
    kind, text = element.tag, element.text or ""
    if kind == "string":
        return text
    if kind == "bool":
        return text == "true"
    if kind == "number":
        return int(text)
    if kind == "double":
        return float(text)
    if kind == "stringlist":
        return [s.text or "" for s in element.findall("string")]
    if kind in ("enum", "set"):
        value = 0
        for part in text.split("|"):
            scope, _, name = part.strip().rpartition("::")
            holder = QtCore.Qt if scope == "Qt" else getattr(QtWidgets, scope, None) or getattr(QtCore, scope)
            value |= int(getattr(holder, name))
        return value
    if kind == "size":
        return QtCore.QSize(int(element.find("width").text), int(element.find("height").text))
    raise ValueError(f"unsupported .ui property type <{kind}>")


class UiLoader:
    """The part of QUiLoader that ``slicer.util.loadUI`` uses: ``load(qfile)``."""

    def load(self, qfile, parent=None):
        root = ET.parse(qfile.fileName()).getroot()
        self.custom = {c.find("class").text for c in root.iter("customwidget")}
        self.byName = {}
        top = self._widget(root.find("widget"), parent)
        for connection in root.iter("connection"):
            sender, receiver = self.byName[connection.find("sender").text], self.byName[connection.find("receiver").text]
            slot = connection.find("slot").text.partition("(")[0]
            qt_signal(sender, connection.find("signal").text).connect(getattr(receiver, slot))
        return top

    def _widget(self, element, parent):
        cls = widget_class(element.get("class"), self.custom)
        widget = cls(parent) if parent is not None else cls()
        widget.setObjectName(element.get("name"))
        self.byName[element.get("name")] = widget
        self._properties(widget, element)
        layout = element.find("layout")
        if layout is not None:
            self._layout(layout, widget)
        for child in element.findall("widget"):  # children outside a layout
            self._widget(child, widget)
        return widget

    def _properties(self, obj, element):
        for prop in element.findall("property"):
            name, value = prop.get("name"), property_value(prop[0])
            if prop.get("stdset") == "0":
                obj.setProperty(name, value)
            elif obj.metaObject().indexOfProperty(name) < 0:
                raise AttributeError(f"{element.get('name')}: {type(obj).__name__} has no property {name!r}")
            else:
                setattr(obj, name, value)

    def _layout(self, element, owner, host=None):
        """A layout of ``owner`` (or, nested, of a layout of ``host``); its widgets are children of that widget."""
        import qt

        layout = getattr(qt, element.get("class"))()
        layout.setObjectName(element.get("name"))
        host = owner if owner is not None else host
        if owner is not None:
            owner.setLayout(layout)
        for item in element.findall("item"):
            child = item[0]
            if child.tag == "widget":
                self._add(layout, item, self._widget(child, host))
            elif child.tag == "layout":
                self._add(layout, item, self._layout(child, None, host))
            elif child.tag == "spacer" and hasattr(layout, "addStretch"):
                layout.addStretch()
        return layout

    @staticmethod
    def _add(layout, item, child):
        is_layout = isinstance(child, QtWidgets.QLayout)
        if isinstance(layout, QtWidgets.QFormLayout):
            row, role = int(item.get("row")), _FORM_ROLES[item.get("column", "1")]
            (layout.setLayout if is_layout else layout.setWidget)(row, role, child)
        else:
            (layout.addLayout if is_layout else layout.addWidget)(child)
