"""CSV exports for spreadsheets and pandas: ``leaderboard.csv`` (one row per table x method, every statistic of
the headline), ``cells.csv`` (one row per stored result: toy model, method, seed, status, every metric),
``metrics.csv`` (long format: one row per metric x (toy model, method) cell, and per metric x method overall,
with mean and 95% interval) and ``robustness.csv`` (long format: ranks per criterion, mean ranks, Kendall
tau-b, order flips).

Every cell goes through :func:`csv_cell`: a text cell that a spreadsheet would read as a formula (it starts
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) gets a leading ``'`` (the OWASP CSV-injection
guard); numbers such as ``-0.5`` are left as they are.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from benchmark.results import ResultRecord, as_records
from leaderboard.data import Board, Row, Stat

SUMMARY_FIELDS = [
    "table",
    "tier",
    "toy",
    "gt_status",
    "method",
    "method_version",
    "reference_row",
    "n_runs",
    "n_errors",
    "complete",
    "mean",
    "ci_low",
    "ci_high",
    "n_success",
    "success_rate",
    "success_low",
    "success_high",
    "rank_mean",
    "rank_best",
    "rank_worst",
    "wall_time_s",
    "cpu_per_success_s",
    "vs_refs",
    "beats_refs",
    "beats_refs_of",
]

METRIC_FIELDS = [
    "metric",
    "direction",
    "scope",  # "cell": one (toy model, method); "overall": the method over the overall table's toy models
    "toy",
    "tier",
    "gt_status",
    "method",
    "reference_row",
    "n_seeds",
    "n_na",
    "n_errors",
    "n_toys",
    "mean",
    "ci_low",
    "ci_high",
    "rank_key",  # smaller is better: -mean, mean, or the mean distance to the ideal
    "rank",
]

ROBUSTNESS_FIELDS = ["kind", "criterion", "criterion_b", "method", "method_b", "rank", "value"]


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value: Any) -> Any:
    """``value``, with a leading ``'`` where it is text that a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def _num(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def _stat(s: Stat) -> list[str]:
    return [_num(s.mean), _num(s.low), _num(s.high)]


def _write(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_cell(h) for h in header])
    w.writerows([csv_cell(v) for v in row] for row in rows)
    return buf.getvalue()


def summary_csv(board: Board) -> str:
    rows: list[list[Any]] = []
    for table in [board.overall, *board.tiers]:
        tier = "" if table.tier is None else table.tier
        for r in table.rows:
            rank = r.rank or (None, None, None)
            rows.append(
                [
                    table.key,
                    tier,
                    "",
                    "",
                    r.method.name,
                    r.method.version,
                    int(r.method.reference_row),
                    r.n_runs,
                    r.n_errors,
                    int(r.complete),
                    *_stat(r.score),
                    r.n_success,
                    *_stat(r.success),
                    _num(rank[0]),
                    "" if rank[1] is None else rank[1],
                    "" if rank[2] is None else rank[2],
                    _num(r.wall_time_s),
                    _num(r.cpu_per_success_s),
                    *_baseline(r),
                ]
            )
    for (method, toy), c in board.cells.items():
        t = next(x for x in board.toys if x.name == toy)
        m = next(x for x in board.methods if x.name == method)
        rows.append(
            [
                "cell",
                t.tier,
                toy,
                t.gt_status,
                method,
                m.version,
                int(m.reference_row),
                c.n,
                len(c.errors),
                1,
                *_stat(c.score),
                c.n_success,
                *_stat(c.success),
                "",
                "",
                "",
                _num(c.wall_time_s),
                _num(c.cpu_per_success_s),
                "",
                "",
                "",
            ]
        )
    return _write(SUMMARY_FIELDS, rows)


def _baseline(r: Row) -> list[str]:
    b = r.baseline
    if b is None:
        return ["", "", ""]
    beats = ["", ""] if r.method.reference_row else [str(b.beats), str(b.of)]
    return [_num(b.normalised), *beats]


def metrics_csv(board: Board) -> str:
    """Every metric's cells and overall rows, long format (:mod:`leaderboard.metric_scores`)."""
    toys = {t.name: t for t in board.toys}
    rows: list[list[Any]] = []
    for name, t in board.metrics.items():
        for r in t.rows:
            ref = int(r.reference)
            rows.append(
                [name, t.direction.label, "overall", "", "", "", r.method, ref, "", "", "", r.n_toys]
                + [*_stat(r.score), _num(r.key), "" if r.rank is None else r.rank]
            )
            for toy in t.toys:
                c = t.cell(r.method, toy)
                if c is None:
                    continue
                info = toys[toy]
                rows.append(
                    [name, t.direction.label, "cell", toy, info.tier, info.gt_status, r.method, ref]
                    + [c.n_seeds, c.n_na, c.n_errors, "", *_stat(c.score), "", ""]
                )
    return _write(METRIC_FIELDS, rows)


def robustness_csv(board: Board) -> str:
    """Ranks per criterion, mean ranks, Kendall tau-b between criteria and every order flip, long format."""
    rob = board.robustness
    rows: list[list[Any]] = []
    if rob is None:
        return _write(ROBUSTNESS_FIELDS, rows)
    for c in rob.criteria:
        rows += [["rank", c.criterion, "", m, "", c.rank[m], _num(c.score.get(m))] for m in rob.methods if m in c.rank]
    rows += [["mean_rank", "", "", m, "", "", _num(rob.mean_rank[m])] for m in rob.methods if m in rob.mean_rank]
    rows += [["tau", a, b, "", "", "", _num(v)] for (a, b), v in rob.tau.items()]
    for f in rob.flips:
        rows += [["flip", x, y, f.a, f.b, "", ""] for x in f.a_ahead for y in f.b_ahead]
    return _write(ROBUSTNESS_FIELDS, rows)


def cells_csv(results: list[ResultRecord] | list[dict[str, Any]]) -> str:
    """Every stored result, one row each, sorted by (toy, method, seed)."""
    results = as_records(results)
    metrics = sorted({k for r in results for k in r.metrics})
    header = [
        "toy",
        "tier",
        "method",
        "seed",
        "status",
        "headline",
        *metrics,
        "wall_time_s",
        "peak_memory_mb",
        "steps",
        "stopped_early",
        "n_components",
        "error",
    ]
    rows = []
    for r in sorted(results, key=lambda r: r.cell):
        cost = r.cost
        rows.append(
            [
                r.cell.toy,
                "" if r.toy.tier is None else r.toy.tier,
                r.cell.method,
                r.cell.seed,
                r.status,
                r.headline,
                *[_num(r.metrics.get(k)) for k in metrics],
                _num(cost.get("wall_time_s")),
                _num(cost.get("peak_memory_mb")),
                cost.get("steps", "") if cost.get("steps") is not None else "",
                int(cost["stopped_early"]) if isinstance(cost.get("stopped_early"), bool) else "",
                cost.get("n_components", "") if cost.get("n_components") is not None else "",
                r.error.summary_full.splitlines()[0] if r.error else "",
            ]
        )
    return _write(header, rows)
