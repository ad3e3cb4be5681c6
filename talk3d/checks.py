"""Value checks shared by every config and every file talk3d reads: types, finiteness, ranges.

A value from the command line or from a JSON file is used only once it has the type its
dataclass field declares, is finite, and lies in the field's range. Failures raise
``ValueError`` with a message naming the field; callers turn it into a one-line user error
that says what to do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

INF = math.inf
ANY = object()
"""In a table of retired settings (:func:`drop_retired`): every saved value was fine."""
Range = tuple[float, float]
"""Inclusive ``(low, high)`` bounds of a number."""


def checked_number(value: Any, name: str, low: float = -INF, high: float = INF, integer: bool = False) -> float:
    """Return ``value`` when it is a finite number in ``[low, high]`` (an int when ``integer``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value


def _base_type(annotation: str) -> tuple[str, bool]:
    """``("int", optional)`` from an annotation string such as ``"int | None"``."""
    parts = [p.strip() for p in str(annotation).split("|")]
    optional = "None" in parts
    rest = [p for p in parts if p != "None"]
    return (rest[0] if rest else "None"), optional


def check_value(value: Any, annotation: str, name: str, bounds: Range | None = None) -> None:
    """Check one value against its field annotation (``int``, ``float``, ``bool``, ``str``,
    ``tuple[...]``/``list[...]`` of numbers, optional ``X | None``) and ``bounds``."""
    base, optional = _base_type(annotation)
    if value is None:
        if not optional:
            raise ValueError(f"{name} must not be empty (null)")
        return
    low, high = bounds if bounds is not None else (-INF, INF)
    if base == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
    elif base in ("int", "float"):
        checked_number(value, name, low, high, integer=base == "int")
    elif base == "str":
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
    elif base.startswith(("tuple[", "list[")) and base.count("[") == 1 and ("float" in base or "int" in base):
        if not isinstance(value, list | tuple) or not value:
            raise ValueError(f"{name} must be a non-empty list of numbers, got {value!r}")
        for i, item in enumerate(value):
            checked_number(item, f"{name}[{i}]", low, high, integer="float" not in base)


def check_fields(obj: Any, bounds: Mapping[str, Range], prefix: str = "") -> None:
    """Check every field of dataclass ``obj`` against its annotation and ``bounds``.

    Raises:
        ValueError: naming the first field (``prefix`` + name) that is off.
    """
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            continue
        check_value(value, str(f.type), prefix + f.name, bounds.get(f.name))


def drop_retired(saved: Mapping[str, Any], retired: Mapping[str, Any], group: str) -> dict[str, Any]:
    """``saved`` (a config read from a file) without the fields of ``retired``.

    ``retired`` maps each removed field to the one value it always had (or :data:`ANY`): a saved
    file written before the removal loads as before. A file that chose another value depends on
    a behaviour that is gone, and raises ``ValueError`` naming it.
    """
    kept = dict(saved)
    for name, value in retired.items():
        if name not in kept:
            continue
        old = kept.pop(name)
        if value is not ANY and old != value:
            raise ValueError(f"{group} setting {name}={old!r} is no longer supported (talk3d now always uses "
                             f"{value!r}); refit with --force")
    return kept
