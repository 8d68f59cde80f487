"""The headline score against the reference rows: a baseline-normalised score and "beats all refs".

On each toy model, ``b`` is the best mean headline score of the reference rows that do not see the ground
truth (the oracle is left out: it scores 1 by construction). A method's normalised score there is
``(s - b) / (1 - b)``: 0 = as good as the best reference, 1 = perfect, negative = worse than a reference;
N/A where ``b > 1 - MIN_HEADROOM`` (a reference row already solves the toy: the ratio would only magnify
rounding, e.g. -600 for a method 0.4 below a reference at 0.9993) or the toy model has no such reference
row. The overall table shows its mean over the
toy models where it is defined, and on how many toy models the method beats every such reference row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MIN_HEADROOM = 0.01  # below this much room between the best reference row and 1, the normalised score is N/A


@dataclass(frozen=True)
class BaselineScore:
    """One method against the reference rows on the overall table's toy models."""

    normalised: float | None  # mean normalised score over the toy models where it is defined
    beats: int  # toy models where its mean exceeds every reference row's
    of: int  # toy models where it has a score and there is a reference row to beat


def best_reference(
    means: Mapping[tuple[str, str], float], references: Sequence[str], toys: Sequence[str]
) -> dict[str, float]:
    """``toy -> b``, the best reference mean on each toy model that has a reference row."""
    out = {}
    for t in toys:
        vals = [means[(m, t)] for m in references if (m, t) in means]
        if vals:
            out[t] = max(vals)
    return out


def baseline_scores(
    means: Mapping[tuple[str, str], float],
    methods: Sequence[str],
    references: Sequence[str],
    toys: Sequence[str],
) -> dict[str, BaselineScore]:
    """``method -> BaselineScore`` from the per-(method, toy) mean headline scores ``means``; ``references``
    are the reference rows that set the bar (the oracle left out by the caller)."""
    best = best_reference(means, references, toys)
    b = np.array([best.get(t, np.nan) for t in toys], dtype=np.float64)  # [toys]
    s = np.array([[means.get((m, t), np.nan) for t in toys] for m in methods], dtype=np.float64)
    s = s.reshape(len(methods), len(toys))  # [methods, toys]
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(b <= 1.0 - MIN_HEADROOM, (s - b) / (1.0 - b), np.nan)
        contest = np.isfinite(s) & np.isfinite(b)
        beats = (s > b) & contest
    out = {}
    for i, m in enumerate(methods):
        n = norm[i][np.isfinite(norm[i])]
        out[m] = BaselineScore(float(n.mean()) if n.size else None, int(beats[i].sum()), int(contest[i].sum()))
    return out
