"""The method-adapter contract (docs/design.md, Core contracts).

A method is a class registered in ``benchmark.registry.METHODS``. It is constructed with
hyperparameter overrides and asked to ``decompose`` a :class:`~benchmark.toy.Target`. Its hyperparameters
are the fields of its ``Config`` dataclass (typed; ``defaults`` derive from it, :mod:`benchmark.hparams`),
then ``per_model_defaults[toy name]`` (each from the method's paper, cited in the module; the reproduction
track only), then the caller's overrides. A plugin may still give a plain ``defaults`` dict instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from benchmark.budget import Budget
from benchmark.decomposition import Decomposition
from benchmark.hparams import check_values, config_defaults
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
    Config: ClassVar[type | None] = None  # a dataclass: the hyperparameters, typed, with their defaults
    defaults: ClassVar[dict[str, Any]] = {}  # derived from Config where the class has one
    per_model_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    trains_seeds_together: ClassVar[bool] = False  # decompose_seeds trains several seeds as one batched model
    # ... and that is faster than the seeds one after another on one thread, so the runner groups them by default
    groups_by_default: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("Config") is not None:
            cls.defaults = config_defaults(cls.Config)

    def __init__(self, **overrides: Any):
        if not isinstance(overrides.get(TUNED, True), bool):
            raise TypeError(f"method {self.name!r}: {TUNED!r} must be true or false, not {overrides[TUNED]!r}")
        self.overrides = dict(overrides)
        if self.Config is not None:
            check_values(self.name, self.Config, self.own_overrides, "override")
        else:
            _check_untyped(self.name, self.defaults, self.per_model_defaults, self.own_overrides)

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

    def decompose_seeds(
        self, target: Target, budget: Budget, seeds: Sequence[int], device: str = "cpu"
    ) -> list[Decomposition | Exception]:
        """One decomposition per seed, or the exception that seed's run raised. A method that sets
        ``trains_seeds_together`` trains them as one batched model, each bit for bit what :meth:`decompose`
        gives alone (``pdbench run --seeds-together`` then runs a (toy, method)'s uncapped seeds as one task);
        this default runs them one after another, each under ``budget``."""
        out: list[Decomposition | Exception] = []
        for seed in seeds:
            torch.manual_seed(seed)
            try:
                out.append(self.decompose(target, budget, seed, device))
            except Exception as exc:  # noqa: BLE001 - this seed's error row; the others stand
                out.append(exc)
        return out


def _check_untyped(name: str, defaults: dict, per_model: dict, overrides: dict[str, Any]) -> None:
    """A plugin's plain ``defaults`` dict: unknown keys are errors, and each override must have its default's
    type (:func:`_type_problem`)."""
    unknown = set(overrides) - set(defaults) - {k for d in per_model.values() for k in d}
    if unknown:
        raise ValueError(f"method {name!r} has no hyperparameter(s) {sorted(unknown)}; known: {sorted(defaults)}")
    for key, value in overrides.items():
        problem = _type_problem(defaults.get(key), value)
        if problem:
            raise TypeError(f"method {name!r}: hyperparameter {key!r} {problem}")


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
    if obj.Config is not None:  # each per-model setting names known hyperparameters with values of their types
        for toy, table in obj.per_model_defaults.items():
            check_values(name, obj.Config, table, f"per_model_defaults[{toy!r}]")


METHODS.check = _method_kind
