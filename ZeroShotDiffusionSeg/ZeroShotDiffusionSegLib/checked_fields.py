"""Declared ranges for the fields of a request dataclass, checked in one place.

A field declares what it accepts next to its default::

    grid_points: int = bounded(16, 1, 64, flag="--grid-points")

and the dataclass calls ``check_fields(self)`` in ``__post_init__``. The check is the same wherever
the object is built (command line, Slicer worker, HTTP server), and it runs before any model loads:

- ``bool`` fields take only True/False; ``int`` fields only whole numbers (1.0 from JSON is accepted
  as 1, 1.5 and True are not); ``float`` fields any real number, stored as float;
- NaN and +-inf are refused for every number;
- ``Optional[...]`` fields also take None.

Messages name the field (its ``title`` words when given), its JSON name and its command-line flag,
and state the allowed range, in one line.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import UserError

_KEY = "bounds"


@dataclass(frozen=True)
class Bounds:
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False  # True: the value must be strictly greater than ``low``
    flag: Optional[str] = None  # the command-line option, named in messages
    unit: str = ""
    title: Optional[str] = None  # words for the field in messages (a Slicer user knows no field names)

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.low is not None and self.high is not None:
            opening = "(" if self.low_open else "["
            return f"in {opening}{_number(self.low)}, {_number(self.high)}]{unit}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}{unit}"
        if self.high is not None:
            return f"<= {_number(self.high)}{unit}"
        return ""

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high


def bounded(default: Any = dataclasses.MISSING, low: Optional[float] = None, high: Optional[float] = None, *,
            low_open: bool = False, flag: Optional[str] = None, unit: str = "", title: Optional[str] = None) -> Any:
    """A dataclass field with a declared range (both ends inclusive unless ``low_open``)."""
    return field(default=default, metadata={_KEY: Bounds(low, high, low_open, flag, unit, title)})


def field_label(instance, name: str) -> str:
    """How messages name a field, for every reader: ``grid points (grid_points, --grid-points)``, or
    ``iterations (--iterations)`` when the field's name is already the words."""
    bounds = _field_bounds(instance).get(name) or Bounds()
    aliases = [part for part in ((name if bounds.title else None), bounds.flag) if part]
    return f"{bounds.title or name} ({', '.join(aliases)})" if aliases else name


def _field_bounds(instance) -> dict:
    return {f.name: f.metadata[_KEY] for f in dataclasses.fields(instance) if _KEY in f.metadata}


def _base_type(annotation) -> tuple:
    """(type, optional) of an annotation such as ``int``, ``Optional[float]`` or ``'Optional[int]'``."""
    if typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0], True
    return annotation, False


def check_number(value: Any, kind: type, label: str, bounds: Bounds):
    """``value`` as ``kind`` (int, float or bool) within ``bounds``, or a UserError naming ``label``."""
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{label} must be true or false, got {_show(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{label} must be a number{_space(bounds)}, got {_show(value)}")
    if not math.isfinite(value):
        raise UserError(f"{label} must be a finite number{_space(bounds)}, got {value}")
    if kind is int:
        if value != int(value):
            raise UserError(f"{label} must be a whole number{_space(bounds)}, got {value}")
        value = int(value)
    else:
        value = float(value)
    if not bounds.contains(value):
        raise UserError(f"{label} must be {bounds.describe()}, got {_number(value)}")
    return value


def check_fields(instance) -> None:
    """Check (and normalise: 3.0 -> 3 for an int field) every field declared with ``bounded``."""
    hints = typing.get_type_hints(type(instance))
    for name, bounds in _field_bounds(instance).items():
        kind, optional = _base_type(hints[name])
        value = getattr(instance, name)
        if value is None and optional:
            continue
        checked = check_number(value, kind, field_label(instance, name), bounds)
        if checked is not value:
            object.__setattr__(instance, name, checked)


def _space(bounds: Bounds) -> str:
    described = bounds.describe()
    return f" {described}" if described else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _show(value: Any) -> str:
    """A short, one-line rendering of a client's value for an error message."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "..."
