"""The Markdown sections beyond the headline: ranking robustness and one compact table per metric.

The cell and header texts here are shared with the other outputs (:mod:`leaderboard.html_page`,
:mod:`leaderboard.latex`), so every format says the same thing.
"""

from __future__ import annotations

from collections.abc import Callable

from tabulate import tabulate

from leaderboard.data import Board, fmt
from leaderboard.directions import direction
from leaderboard.metric_scores import MetricCell, MetricRow, MetricTable
from leaderboard.notes import blind_spot, direction_text, metrics_text, papers_blind_spot, robustness_text
from leaderboard.robustness import CriterionRanks, Robustness
from leaderboard.stats import Stat
from leaderboard.text import ERR_MARK, REF_MARK, interval_text, md_escape

NA = "N/A"


def criterion_header(c: CriterionRanks) -> str:
    """A criterion's column header: the metric and its direction arrow, or ``a+b (mean rank)``."""
    if c.composite:
        return f"{c.criterion} (mean rank)"
    return f"{c.criterion} {direction(c.criterion).arrow}"


def criterion_cell(c: CriterionRanks, method: str) -> str:
    """``rank (score)``; the score of a composite criterion is its mean part rank; N/A without a rank."""
    if method not in c.rank:
        return NA
    score = c.score.get(method)
    shown = "-" if score is None else f"{score:.2f}" if c.composite else fmt(score)
    return f"{c.rank[method]} ({shown})"


def mean_rank_text(rob: Robustness, method: str) -> str:
    return f"{rob.mean_rank[method]:.2f}" if method in rob.mean_rank else NA


def tau_text(tau: float | None) -> str:
    return NA if tau is None else f"{tau:.2f}"


def flip_text(a: str, b: str, a_ahead: tuple[str, ...], b_ahead: tuple[str, ...], q: Callable[[str], str]) -> str:
    """``a / b: a ahead under x, y; b ahead under z``; ``q`` quotes a name for the format."""
    return (
        f"{q(a)} / {q(b)}: {q(a)} ahead under {', '.join(map(q, a_ahead))}; "
        f"{q(b)} ahead under {', '.join(map(q, b_ahead))}"
    )


def metric_cell_text(c: MetricCell | None, interval: bool = False) -> str:
    """A per-metric cell: the mean (and interval), ``N/A`` without a value, marks for failed and N/A seeds."""
    if c is None:
        return "-"
    if c.n_errors and c.n_errors == c.n_seeds:
        return f"ERROR {ERR_MARK}{c.n_errors}/{c.n_seeds}"
    if c.score.mean is None:
        return NA
    text = fmt(c.score.mean) + (f" {interval_text(c.score)}" if interval and c.score.low is not None else "")
    if c.n_errors:
        text += f" {ERR_MARK}{c.n_errors}/{c.n_seeds}"
    if c.n_na and c.values:
        text += f" ({NA} x{c.n_na})"
    return text


def overall_text(s: Stat, interval: bool = False) -> str:
    if s.mean is None:
        return NA
    return fmt(s.mean) + (f" {interval_text(s)}" if interval and s.low is not None else "")


def rank_text(r: MetricRow) -> str:
    return "ref" if r.reference else NA if r.rank is None else str(r.rank)


def distance_header(t: MetricTable) -> str | None:
    """The extra column of an ideal-valued metric: its rank key, the mean over toy models of |mean - ideal|."""
    return None if t.direction.ideal is None else f"distance to {t.direction.ideal:g}"


def _code(name: str) -> str:
    return f"`{md_escape(name)}`"


def robustness_markdown(board: Board) -> list[str]:
    """The "Ranking robustness" section: ranks per criterion, Kendall tau-b and the order flips."""
    rob = board.robustness
    if rob is None:
        return []
    header = ["mean rank", "method", *[md_escape(criterion_header(c)) for c in rob.criteria]]
    rows = [[mean_rank_text(rob, m), md_escape(m), *[criterion_cell(c, m) for c in rob.criteria]] for m in rob.methods]
    parts = ["## Ranking robustness", "", robustness_text(board, md_escape), ""]
    parts += [tabulate(rows, headers=header, tablefmt="github", disable_numparse=True), ""]
    if note := papers_blind_spot(board):
        parts += [note, ""]
    names = [md_escape(c.criterion) for c in rob.criteria]
    tau_rows = [
        [n, *[tau_text(rob.tau[(c.criterion, d.criterion)]) for d in rob.criteria]]
        for n, c in zip(names, rob.criteria, strict=True)
    ]
    parts += ["### Kendall tau-b between the criteria's rankings", ""]
    parts += [tabulate(tau_rows, headers=["", *names], tablefmt="github", disable_numparse=True), ""]
    parts += ["### Order flips between criteria", ""]
    if rob.flips:
        parts += [f"- {flip_text(f.a, f.b, f.a_ahead, f.b_ahead, _code)}" for f in rob.flips]
    else:
        parts += ["No two methods swap places between these criteria."]
    return [*parts, ""]


def metric_rows(board: Board, t: MetricTable, interval: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one metric's table: rank, method, overall, [distance], then every toy model."""
    contested = {x.name for x in board.toys if x.contested}
    dist = distance_header(t)
    header = [
        "rank",
        "method",
        "overall",
        *([dist] if dist else []),
        *[md_escape(x) + ("*" if x in contested else "") for x in t.toys],
    ]
    rows = [
        [
            rank_text(r),
            md_escape(r.method) + (f" {REF_MARK}" if r.reference else ""),
            overall_text(r.score, interval),
            *([NA if r.key is None else fmt(r.key)] if dist else []),
            *[metric_cell_text(t.cell(r.method, x), interval) for x in t.toys],
        ]
        for r in t.rows
    ]
    return header, rows


def metrics_markdown(board: Board) -> list[str]:
    """The "Scores by metric" section: a compact table (means only) for every metric but the headline."""
    others = [t for name, t in board.metrics.items() if name != board.headline]
    if not others:
        return []
    parts = ["## Scores by metric", "", metrics_text(board, md_escape)]
    parts[-1] += " The headline's tables are the ones above; intervals are in `index.html` and `metrics.csv`." + (
        " `*`: contested ground truth, left out of `overall`." if any(x.contested for x in board.toys) else ""
    )
    parts += [""]
    for t in others:
        header, rows = metric_rows(board, t)
        parts += [f"### {direction_text(t, md_escape)}", ""]
        parts += [tabulate(rows, headers=header, tablefmt="github", disable_numparse=True), ""]
        if note := blind_spot(t):
            parts += [note, ""]
    return parts
