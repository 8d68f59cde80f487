"""Typed hyperparameters: each method adapter declares one dataclass, its ``Config``, whose fields are its
hyperparameters with their types and defaults (blind-protocol issue, "one typed config per method").

The adapter's ``defaults`` derive from it, and every value that replaces a default (a per-model setting, a
``--hparams`` override) is checked against the field's type here, in one place: an unknown key or a value of
the wrong type is an error that names the method, the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union


def config_defaults(config: type) -> dict[str, Any]:
    """The defaults of a ``Config`` dataclass, field by field (``default_factory`` fields included)."""
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        raise TypeError(f"Config must be a dataclass, not {config!r}")
    instance = config()
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(config)}


def config_types(config: type) -> dict[str, Any]:
    """Field name -> its resolved type annotation."""
    hints = typing.get_type_hints(config)
    return {f.name: hints[f.name] for f in dataclasses.fields(config)}


def fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of type ``hint``: unions and Optional, Literal, bool (only a bool), int (not a
    bool), float (an int too), str, and list / tuple / dict by their outer type."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(fits(value, h) for h in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    outer = origin or hint
    if outer in (list, tuple):
        return isinstance(value, list | tuple)
    return isinstance(value, outer) if isinstance(outer, type) else True


def type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_values(method: str, config: type, values: dict[str, Any], where: str) -> None:
    """Raise ValueError for a key that is no field of ``config``, TypeError for a value of the wrong type."""
    hints = config_types(config)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ValueError(f"method {method!r} has no hyperparameter(s) {unknown} ({where}); known: {sorted(hints)}")
    for key, value in values.items():
        if not fits(value, hints[key]):
            raise TypeError(
                f"method {method!r}: hyperparameter {key!r} must be a {type_name(hints[key])}, not {value!r} ({where})"
            )
