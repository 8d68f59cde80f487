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
from benchmark.names import TUNED
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
        known = {TUNED, *self.defaults, *(k for d in self.per_model_defaults.values() for k in d)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no hyperparameter(s) {sorted(unknown)}; known: {sorted(self.defaults)}"
            )
        for key, value in overrides.items():
            problem = _type_problem(self.defaults.get(key, True if key == TUNED else None), value)
            if problem:
                raise TypeError(f"method {self.name!r}: hyperparameter {key!r} {problem}")
        self.overrides = dict(overrides)

    def hparams(self, toy_name: str) -> dict[str, Any]:
        """The hyperparameters used on ``toy_name``: defaults < per-model defaults < overrides. With the
        override ``tuned=False`` (``pdbench run --blind``) the per-model defaults are skipped: the method runs
        its one blind rule on every toy, the papers' toys included."""
        return {**self.defaults, **self.tuned_for(toy_name, self.per_model_defaults), **self.own_overrides}

    def tuned_for(self, toy_name: str, table: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """``table[toy_name]`` (a per-model setting), or nothing where the caller asked for the blind rule."""
        return table.get(toy_name, {}) if self.overrides.get(TUNED, True) else {}

    @property
    def own_overrides(self) -> dict[str, Any]:
        """The overrides that are hyperparameters (all but the ``tuned`` switch)."""
        return {k: v for k, v in self.overrides.items() if k != TUNED}

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
