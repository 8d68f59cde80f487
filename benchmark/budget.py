"""A cell's compute budget (a plain record: importing it loads no torch)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


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
