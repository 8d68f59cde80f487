"""Ranking robustness: the submitted methods' ranking under several criteria, how much the rankings agree
(Kendall tau-b) and which pairs of methods swap places between criteria.

A criterion is a metric name from :data:`RANKING_METRICS`, ranked as :mod:`leaderboard.metric_scores` ranks
it (on the overall table's toy models, reference rows left out), or several names joined by ``+``: a method
is then ranked by the mean of its ranks under each of them, over the ones where it has a rank. That is how
the APD and SPD papers read MMCS with ML2R: ``mmcs_apd+ml2r_apd`` ranks by the mean of the rank under
``mmcs_apd`` (higher is better) and the rank under |``ml2r_apd`` - 1|, and a method with no ``ml2r_apd``
(one that claims no faithfulness) by its ``mmcs_apd`` rank alone. A metric absent from the results ranks
no method (an N/A column), and a method with no value on any toy model gets no rank under that criterion.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from scipy import stats as sps

from leaderboard.metric_scores import MetricTable, competition_ranks

RANKING_METRICS = ("hungarian", "mmcs", "mmcs_apd+ml2r_apd", "mass_f1", "activity_f1")
"""The ranking criteria, in column order; ``a+b`` is the mean of the ranks under ``a`` and under ``b``."""


@dataclass
class CriterionRanks:
    """One criterion: each ranked method's score (a metric's overall mean, or a mean rank) and rank."""

    criterion: str
    parts: tuple[str, ...]
    score: dict[str, float]  # method -> the metric's overall mean, or the mean of its part ranks
    rank: dict[str, int]
    missing: tuple[str, ...] = ()  # parts absent from the results

    @property
    def composite(self) -> bool:
        return len(self.parts) > 1


@dataclass(frozen=True)
class Flip:
    """Two methods whose order differs between criteria: who is ahead under which."""

    a: str
    b: str
    a_ahead: tuple[str, ...]
    b_ahead: tuple[str, ...]


@dataclass
class Robustness:
    methods: list[str]  # the submitted methods, best mean rank first
    criteria: list[CriterionRanks]
    mean_rank: dict[str, float]  # over the criteria that rank the method
    tau: dict[tuple[str, str], float | None]  # Kendall tau-b; None with < 2 shared methods or no variation
    flips: list[Flip]
    left_out: list[str]  # reference rows (the oracle among them), not ranked


def _criterion(name: str, tables: Mapping[str, MetricTable], methods: Sequence[str]) -> CriterionRanks:
    parts = tuple(p.strip() for p in name.split("+"))
    missing = tuple(p for p in parts if p not in tables)
    ranks = {p: {r.method: r.rank for r in tables[p].rows if r.rank is not None} for p in parts if p in tables}
    if len(parts) == 1:
        t = tables.get(parts[0])
        score = {} if t is None else {r.method: r.score.mean for r in t.rows if r.rank is not None}
        return CriterionRanks(name, parts, score, ranks.get(parts[0], {}), missing)
    score = {
        m: statistics.fmean(mine) for m in methods if (mine := [float(ranks[p][m]) for p in ranks if m in ranks[p]])
    }
    names = sorted(score)
    return CriterionRanks(
        name, parts, score, dict(zip(names, competition_ranks([score[m] for m in names]), strict=True)), missing
    )


def kendall_tau(a: Mapping[str, float], b: Mapping[str, float]) -> float | None:
    """Kendall tau-b between two rankings over the methods both rank; None where it is undefined."""
    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return None
    res = sps.kendalltau([a[m] for m in shared], [b[m] for m in shared])
    tau = float(res.statistic)
    return tau if math.isfinite(tau) else None


def flips(criteria: Sequence[CriterionRanks], methods: Sequence[str]) -> list[Flip]:
    """Every pair of methods that one criterion puts in one order and another in the opposite one."""
    out = []
    for a, b in combinations(sorted(methods), 2):
        both = [c for c in criteria if a in c.rank and b in c.rank and c.rank[a] != c.rank[b]]
        a_ahead = tuple(c.criterion for c in both if c.rank[a] < c.rank[b])
        b_ahead = tuple(c.criterion for c in both if c.rank[b] < c.rank[a])
        if a_ahead and b_ahead:
            out.append(Flip(a, b, a_ahead, b_ahead))
    return out


def robustness(
    tables: Mapping[str, MetricTable], references: Mapping[str, bool], criteria: Sequence[str] = RANKING_METRICS
) -> Robustness:
    """The rankings of the submitted methods (``references[m]`` False) under ``criteria``."""
    methods = sorted(m for m, ref in references.items() if not ref)
    ranked = [_criterion(c, tables, methods) for c in criteria]
    mean_rank = {m: statistics.fmean(mine) for m in methods if (mine := [c.rank[m] for c in ranked if m in c.rank])}
    order = sorted(methods, key=lambda m: (m not in mean_rank, mean_rank.get(m, 0.0), m))
    tau = {(x.criterion, y.criterion): kendall_tau(x.rank, y.rank) for x in ranked for y in ranked}
    left_out = sorted(m for m, ref in references.items() if ref)
    return Robustness(order, ranked, mean_rank, tau, flips(ranked, methods), left_out)
