"""Which way is better for a metric: read from the metric registry (``higher_is_better``, ``ideal``).

A metric with an ``ideal`` value (``ml2r_apd``: 1, ``active_excess``: 0) is ranked by its distance to that
value, a lower-is-better metric ascending, any other metric descending. Names the registry does not know
(a metric added after these results were scored, or one whose module fails to import) are taken as
higher-is-better, and said so in their label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from benchmark.registry import METRICS


@dataclass(frozen=True)
class Direction:
    """How to read one metric: better is higher, lower, or closer to ``ideal``."""

    metric: str
    higher_is_better: bool = True
    ideal: float | None = None
    known: bool = True  # False: not in the registry, taken as higher-is-better

    @property
    def label(self) -> str:
        if self.ideal is not None:
            return f"closer to {self.ideal:g}"
        text = "higher is better" if self.higher_is_better else "lower is better"
        return text if self.known else f"{text} (assumed: not a registered metric)"

    @property
    def arrow(self) -> str:
        """A short column-header hint: ``↑``, ``↓`` or ``→1``."""
        return f"→{self.ideal:g}" if self.ideal is not None else "↑" if self.higher_is_better else "↓"

    def badness(self, values: np.ndarray) -> np.ndarray:
        """Rank keys, smaller is better: the distance to the ideal, the value, or minus the value (NaN stays)."""
        v = np.asarray(values, dtype=np.float64)
        if self.ideal is not None:
            return np.abs(v - self.ideal)
        return v if not self.higher_is_better else -v


@cache
def direction(metric: str) -> Direction:
    """The :class:`Direction` of ``metric`` from ``benchmark.registry.METRICS``; higher-is-better if unknown.

    Only registered names are looked up: a ``module:object`` string from a result file is never imported."""
    try:
        if ":" in metric or metric not in METRICS:
            return Direction(metric, known=False)
        m = METRICS.get(metric)
        ideal = getattr(m, "ideal", None)
        return Direction(
            metric,
            bool(getattr(m, "higher_is_better", True)),
            float(ideal) if ideal is not None and math.isfinite(ideal) else None,
        )
    except Exception:  # a metric module that fails to import: fall back rather than break the board
        return Direction(metric, known=False)
