"""The method-adapter contract (DESIGN.md, Core contracts).

A method is a class registered in ``benchmark.registry.METHODS``. It is constructed with
hyperparameter overrides and asked to ``decompose`` a :class:`~benchmark.toy.Target`. Its defaults
come from ``defaults``, then ``per_model_defaults[toy name]`` (each from the method's paper, cited
in the module), then the caller's overrides.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from benchmark.decomposition import Decomposition
from benchmark.toy import Target


@dataclass(frozen=True)
class Budget:
    """A per-method compute budget, recorded in every result so that comparisons are fair.

    ``steps`` caps optimisation steps (None: the method's own default); ``scale`` multiplies a method's
    default number of steps (the ``quick`` suite uses less than 1); ``seconds`` is a soft cap on the CPU time
    of one ``decompose`` call: an iterative method takes a :meth:`timer` when it starts, asks it between steps,
    stops early where it says so and
    says so in ``RunRecord.stopped_early``. CPU time of the process, not wall time, so that other load on the
    machine hardly changes where a run stops (with one torch thread per worker, as the runner sets).
    """

    steps: int | None = None
    seconds: float | None = None
    scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def steps_or(self, default: int) -> int:
        return self.steps if self.steps is not None else max(1, round(default * self.scale))

    @staticmethod
    def clock() -> float:
        """The clock ``seconds`` is measured on: this process's CPU time."""
        return time.process_time()

    def timer(self) -> Callable[[], bool]:
        """A function saying whether the soft ``seconds`` cap has run out since this call (never, without one)."""
        start = self.clock()
        return lambda: self.seconds is not None and self.clock() - start > self.seconds


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
        self.overrides = dict(overrides)

    def hparams(self, toy_name: str) -> dict[str, Any]:
        """The hyperparameters used on ``toy_name``: defaults < per-model defaults < overrides."""
        return {**self.defaults, **self.per_model_defaults.get(toy_name, {}), **self.overrides}

    @abstractmethod
    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        """Split ``target``'s decomposed parameters into components."""
