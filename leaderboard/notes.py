"""The explanatory text of the ranking-robustness and per-metric sections, shared by every output.

Each function returns one paragraph in Markdown inline style (names in backticks); the HTML page turns the
backticks into ``<code>``, the LaTeX comments drop them. Metric and method names come from result files, so
every caller escapes the text for its format (``esc``).
"""

from __future__ import annotations

from collections.abc import Callable

from leaderboard.data import Board, fmt
from leaderboard.directions import direction
from leaderboard.metric_scores import MetricTable

PAPER_METRICS = ("mmcs_apd", "ml2r_apd")  # the APD/SPD papers' recovery metrics, blind to merged mechanisms
MERGE_REFERENCE = "whole"  # the reference row that returns all weights as one component
PERFECT = 1.0  # the best value of both paper metrics (mmcs_apd's maximum, ml2r_apd's ideal)

Esc = Callable[[str], str]


def _plain(text: str) -> str:
    return text


def _whole_perfect(table: MetricTable) -> tuple[int, int]:
    """(toy models where ``whole`` scores 1.000, toy models where it has a value), on the overall table's."""
    means = [c.score.mean for t in table.core if (c := table.cell(MERGE_REFERENCE, t)) and c.score.mean is not None]
    return sum(abs(m - PERFECT) < 5e-4 for m in means), len(means)


def blind_spot(table: MetricTable) -> str | None:
    """The line beside a paper metric: what ``whole`` scores on it, which shows it cannot see merges."""
    row = table.row(MERGE_REFERENCE)
    if table.metric not in PAPER_METRICS or row is None or row.score.mean is None:
        return None
    k, n = _whole_perfect(table)
    return (
        f"`{MERGE_REFERENCE}` (one component = all weights) scores {fmt(row.score.mean)} here "
        f"({fmt(PERFECT)} on {k} of {n} toy models): this metric cannot see merges."
    )


def papers_blind_spot(board: Board) -> str | None:
    """The same line for the paper metrics together, for the ranking-robustness section."""
    parts = []
    for name in PAPER_METRICS:
        t = board.metrics.get(name)
        row = t.row(MERGE_REFERENCE) if t else None
        if t is not None and row is not None and row.score.mean is not None:
            k, n = _whole_perfect(t)
            parts.append(f"`{name}` {fmt(row.score.mean)} ({fmt(PERFECT)} on {k} of {n} toy models)")
    if not parts:
        return None
    return (
        f"`{MERGE_REFERENCE}` (one component = all weights) scores {' and '.join(parts)} here: "
        "these metrics cannot see merges."
    )


def _part_text(metric: str, esc: Esc) -> str:
    d = direction(metric)
    if d.ideal is None:
        return f"the rank under `{esc(metric)}` ({d.label})"
    return f"the rank under |`{esc(metric)}` - {d.ideal:g}| (smaller is better)"


def robustness_text(board: Board, esc: Esc = _plain) -> str:
    """How the ranking-robustness section ranks, and what it leaves out."""
    rob = board.robustness
    if rob is None:
        return ""
    refs = ", ".join(f"`{esc(m)}`" for m in rob.left_out) or "none"
    text = (
        f"The submitted methods ranked under {len(rob.criteria)} criteria on the {len(board.overall.toys)} toy "
        f"models of the overall table (contested ones left out). Reference rows ({refs}; the oracle sees the "
        "ground truth) are left out of these ranks; their scores are in the per-metric tables. A method's "
        "score under a metric is the mean over those toy models of its mean over seeds (N/A and failed seeds "
        f"skipped, except that the headline `{esc(board.headline)}` scores them 0, as in the overall table); "
        "a metric with an ideal value ranks by the mean distance to it per toy model, a lower-is-better one "
        "ascending, any other descending. 1 = best, ties share the better rank, and a method with no value on "
        "any toy model gets no rank (N/A). Cells show the rank and, in brackets, the score."
    )
    for c in rob.criteria:
        if c.composite:
            parts = " and ".join(_part_text(p, esc) for p in c.parts)
            text += (
                f" `{esc(c.criterion)}` ranks by the mean of {parts}, over the parts where the method has a "
                "rank; its cell shows that mean rank."
            )
            if "ml2r_apd" in c.parts:
                text += (
                    " This is MMCS with ML2R as the APD and SPD papers use them: a method with no `ml2r_apd` "
                    "(one that claims no faithfulness) is ranked by the other part alone."
                )
    for c in rob.criteria:
        for p in c.missing:
            text += f" `{esc(p)}` is not in these results: it ranks no method (N/A)."
    return text + (
        " Mean rank: over the criteria that rank the method. Kendall tau-b: the agreement of two criteria's "
        "rankings over the methods both rank (1 = the same order, -1 = reversed; N/A with fewer than two)."
    )


def metrics_text(board: Board, esc: Esc = _plain) -> str:
    """How the per-metric tables read."""
    contested = len(board.toys) - len(board.overall.toys)
    return (
        "Every metric in the results, one table each: the mean over seeds on each toy model (failed and N/A "
        f"seeds skipped, except for the headline `{esc(board.headline)}`, where they score 0; `N/A`: no seed "
        "has a value; `✗k/n`: k of n seeds failed), `overall` = the mean over the toy models of the overall "
        "table" + (f" ({contested} contested one(s) left out)" if contested else "") + ", and the rank among "
        "the submitted methods by the metric's direction (higher or lower is better, or closer to an ideal "
        "value: ranked by the mean distance to it per toy model)."
    )


def direction_text(table: MetricTable, esc: Esc = _plain) -> str:
    """``mmcs (higher is better)``-style heading text."""
    return f"{esc(table.metric)} ({table.direction.label})"
