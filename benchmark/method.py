"""The method-adapter contract (docs/design.md, Core contracts).

A method is a class registered in ``benchmark.registry.METHODS``. It is constructed with
hyperparameter overrides and asked to ``decompose`` a :class:`~benchmark.toy.Target`. Its defaults
come from ``defaults``, then ``per_model_defaults[toy name]`` (each from the method's paper, cited
in the module), then the caller's overrides.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from benchmark.budget import Budget
from benchmark.decomposition import Decomposition
from benchmark.registry import METHODS
from benchmark.toy import Target


class Method(ABC):
    """Base class for method adapters."""

    name: ClassVar[str] = "unnamed"
    version: ClassVar[str] = "0"
    paper: ClassVar[str] = ""
    reference_row: ClassVar[bool] = False  # a baseline every leaderboard shows (oracle, random, ...)
    sees_ground_truth: ClassVar[bool] = False  # only the labelled oracle may set this
    defaults: ClassVar[dict[str, Any]] = {}
    per_model_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, **overrides: Any):
        unknown = set(overrides) - set(self.defaults) - {k for d in self.per_model_defaults.values() for k in d}
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no hyperparameter(s) {sorted(unknown)}; known: {sorted(self.defaults)}"
            )
        for key, value in overrides.items():
            problem = _type_problem(self.defaults.get(key), value)
            if problem:
                raise TypeError(f"method {self.name!r}: hyperparameter {key!r} {problem}")
        self.overrides = dict(overrides)

    def hparams(self, toy_name: str) -> dict[str, Any]:
        """The hyperparameters used on ``toy_name``: defaults < per-model defaults < overrides."""
        return {**self.defaults, **self.per_model_defaults.get(toy_name, {}), **self.overrides}

    @abstractmethod
    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        """Split ``target``'s decomposed parameters into components."""


def _type_problem(default: Any, value: Any) -> str | None:
    """Why ``value`` cannot replace ``default`` (None where it can): a bool for a bool, a number for a
    number (an int where the default is an int), a string for a string; anything where the default is None
    or a container."""
    if default is None or value is None or isinstance(default, list | tuple | dict):
        return None
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int)
    elif isinstance(default, float):
        ok = isinstance(value, int | float)
    else:
        ok = isinstance(value, type(default))
    return None if ok else f"must be a {type(default).__name__} like its default {default!r}, not {value!r}"


def _method_kind(name: str, obj: Any) -> None:
    """A method is a subclass of :class:`Method`; its ``name`` comes from the registration."""
    if not (isinstance(obj, type) and issubclass(obj, Method)):
        raise TypeError(f"{obj!r} is not a subclass of benchmark.method.Method")
    own = obj.__dict__.get("name")
    if own is not None and own != name:
        raise TypeError(f"its class sets name = {own!r}; the registered name is the method's name (drop the attribute)")
    obj.name = name


METHODS.check = _method_kind
