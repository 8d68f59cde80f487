"""Any metric's (toy model x method) scores: the table the headline has, for every metric the results hold.

Conventions (the page text says them too):

- A cell's score is the mean over seeds with a 95% bootstrap interval. For the headline metric the cells are
  the board's (a failed or N/A seed scores 0); for any other metric failed and N/A seeds are skipped (a 0
  would read as perfect on a lower-is-better metric), and counted.
- A method's overall score is the mean over the overall table's toy models (contested ones left out) of
  its per-toy means, over the toy models where it has one.
- Rank keys come from :mod:`leaderboard.directions`: the negated score (higher is better), the score (lower is
  better) or, for ideal-valued metrics, the mean over toy models of |toy mean - ideal| (per toy, so that a
  method above the ideal on one toy and below it on another does not average out to the ideal).
- Only submitted methods are ranked (1 = best, exact ties share the better rank); reference rows are listed.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from benchmark.results import ResultRecord
from leaderboard.directions import Direction, direction
from leaderboard.stats import Stat, mean_ci

KEY_DECIMALS = 12  # rank keys are rounded so that float noise does not break a tie


@dataclass
class MetricCell:
    """One (toy model, method) under one metric."""

    values: dict[tuple[int, int], float]  # (toy instance, seed) -> value (headline: 0.0 for a failed or N/A run)
    n_seeds: int
    n_na: int  # seeds that ran but have no value
    n_errors: int  # seeds that failed
    score: Stat


@dataclass
class MetricRow:
    """One method's overall score under one metric, with its rank key (smaller is better) and rank."""

    method: str
    reference: bool
    score: Stat
    n_toys: int  # overall-table toy models where it has a value
    key: float | None  # None: no value on any of those toy models
    rank: int | None = None  # submitted methods with a key only


@dataclass
class MetricTable:
    """Every cell and the overall rows of one metric."""

    metric: str
    direction: Direction
    toys: list[str]  # every toy model, in board order
    core: list[str]  # the overall table's toy models
    cells: dict[tuple[str, str], MetricCell]  # (method, toy) -> cell
    rows: list[MetricRow]  # best key first, then the rows without a value

    def cell(self, method: str, toy: str) -> MetricCell | None:
        return self.cells.get((method, toy))

    def row(self, method: str) -> MetricRow | None:
        return next((r for r in self.rows if r.method == method), None)


def _finite(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def record_cells(records: Iterable[ResultRecord], metric: str) -> dict[tuple[str, str], MetricCell]:
    """``(method, toy) -> MetricCell`` of ``metric`` over the records; failed and N/A seeds are skipped."""
    grouped: dict[tuple[str, str], list[ResultRecord]] = defaultdict(list)
    for r in records:
        grouped[(r.cell.method, r.family)].append(r)
    out = {}
    for key, rs in sorted(grouped.items()):
        values, na, errors = {}, 0, 0
        for r in sorted(rs, key=lambda r: r.replicate):
            v = _finite(r.metrics.get(metric)) if r.ok else None
            if not r.ok:
                errors += 1
            elif v is None:
                na += 1
            else:
                values[r.replicate] = v
        out[key] = MetricCell(values, len(rs), na, errors, mean_ci(list(values.values())))
    return out


def _overall(cells: Sequence[MetricCell]) -> Stat:
    """Mean of the cells' means; its interval from the per-seed averages over the seeds every cell has."""
    mine = [c for c in cells if c.score.mean is not None]
    if not mine:
        return Stat()
    mean = statistics.fmean(c.score.mean for c in mine)
    seeds = set.intersection(*(set(c.values) for c in mine))
    if not seeds:
        return Stat(mean)
    s = mean_ci([statistics.fmean(c.values[k] for c in mine) for k in sorted(seeds)])
    return Stat(mean, min(s.low, mean), max(s.high, mean))


def competition_ranks(keys: Sequence[float]) -> list[int]:
    """1 = smallest key; exact ties (after rounding to :data:`KEY_DECIMALS`) share the better rank."""
    if not len(keys):
        return []
    return [int(x) for x in sps.rankdata(np.round(np.asarray(keys, dtype=np.float64), KEY_DECIMALS), method="min")]


def metric_table(
    metric: str,
    cells: dict[tuple[str, str], MetricCell],
    methods: Mapping[str, bool],
    toys: Sequence[str],
    core: Sequence[str],
) -> MetricTable:
    """The overall rows of ``metric`` from its cells; ``methods`` maps each method to "is a reference row"."""
    d = direction(metric)
    names = sorted(methods)
    means = np.array(  # [methods, core toys]; NaN where there is no value
        [[_mean(cells.get((m, t))) for t in core] for m in names], dtype=np.float64
    ).reshape(len(names), len(core))
    has = np.isfinite(means)
    n_toys = has.sum(axis=1)
    with np.errstate(invalid="ignore"):
        bad = np.where(has, d.badness(np.where(has, means, 0.0)), 0.0).sum(axis=1) / np.maximum(n_toys, 1)
    rows = []
    for i, m in enumerate(names):
        score = _overall([c for t in core if (c := cells.get((m, t))) is not None])
        if n_toys[i] == 0:
            key = None
        elif d.ideal is not None:
            key = float(bad[i])
        else:
            key = float(d.badness(np.array([score.mean]))[0])
        rows.append(MetricRow(m, methods[m], score, int(n_toys[i]), key))
    ranked = [r for r in rows if not r.reference and r.key is not None]
    for r, k in zip(ranked, competition_ranks([r.key for r in ranked]), strict=True):
        r.rank = k
    rows.sort(key=lambda r: (r.key is None, round(r.key, KEY_DECIMALS) if r.key is not None else 0.0, r.method))
    return MetricTable(metric, d, list(toys), list(core), cells, rows)


def _mean(c: MetricCell | None) -> float:
    return math.nan if c is None or c.score.mean is None else c.score.mean
