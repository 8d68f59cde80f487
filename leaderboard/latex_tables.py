"""Every LaTeX file ``pdbench leaderboard`` writes: the overall and per-tier tables of one metric (the
headline by default, :mod:`leaderboard.latex`; any other with ``--metric NAME``) and ``robustness.tex``.

A non-headline metric's tables have the same layout as the headline's, with its direction in the caption,
point ranks (1 = best by the metric's direction among submitted methods; no rank bands) and, for the papers'
metrics, the ``whole`` reference row's score as a comment line (:func:`leaderboard.notes.blind_spot`).
"""

from __future__ import annotations

from leaderboard.data import Board, Table, fmt
from leaderboard.latex import escape, render_latex, stat_tex, tabular
from leaderboard.markdown_metrics import NA, criterion_cell, distance_header, rank_text, tau_text
from leaderboard.metric_scores import MetricCell, MetricRow, MetricTable, metric_table
from leaderboard.notes import blind_spot, papers_blind_spot


class UnknownMetricError(ValueError):
    """``--metric`` names a metric the results do not hold."""


def _cell(c: MetricCell | None) -> str:
    if c is None:
        return "--"
    if c.n_errors and c.n_errors == c.n_seeds:
        return f"\\textsc{{error}} $\\times{c.n_errors}/{c.n_seeds}$"
    if c.score.mean is None:
        return NA
    text = stat_tex(c.score)
    if c.n_errors:
        text += f" $\\times{c.n_errors}/{c.n_seeds}$"
    return text


def _method(r: MetricRow) -> str:
    name = escape(r.method)
    return f"\\textit{{{name}}}$^\\dagger$" if r.reference else name


def _rank(r: MetricRow) -> str:
    return {"ref": "ref.", NA: "--"}.get(text := rank_text(r), text)


def _notes(t: MetricTable) -> tuple[str, ...]:
    note = blind_spot(t)
    return () if note is None else (escape(note.replace("`", "")),)


def _score(r: MetricRow) -> str:
    return stat_tex(r.score) if r.score.mean is not None else NA


def _overall(board: Board, t: MetricTable) -> str:
    tiers = sorted({x.tier for x in board.overall.toys})
    per_tier = {k: _sub_table(board, t, [x.name for x in board.overall.toys if x.tier == k]) for k in tiers}
    dist = distance_header(t)
    header = ["Rank", "Method", "Score", *([escape(dist.capitalize())] if dist else []), *[f"T{k}" for k in tiers]]
    rows = []
    for r in t.rows:
        tier_means = [row.score.mean if (row := sub.row(r.method)) else None for sub in per_tier.values()]
        rows.append(
            [
                _rank(r),
                _method(r),
                _score(r),
                *([NA if r.key is None else f"${fmt(r.key)}$"] if dist else []),
                *["--" if m is None else f"${fmt(m)}$" for m in tier_means],
            ]
        )
    return tabular(
        header,
        rows,
        "cl" + "c" * (len(header) - 2),
        f"{escape(board.overall.title)}: {escape(t.metric)} ({escape(t.direction.label)}), mean over seeds "
        "[95% bootstrap CI]; rank = point rank among submitted methods by the metric's direction",
        _notes(t),
    )


def _sub_table(board: Board, t: MetricTable, toys: list[str]) -> MetricTable:
    """``t`` restricted to ``toys`` (one tier): the same cells, rows and ranks over those toy models."""
    refs = {m.name: m.reference_row for m in board.methods}
    return metric_table(t.metric, t.cells, refs, toys, toys)


def _tier(board: Board, t: MetricTable, tier: Table) -> str:
    sub = _sub_table(board, t, [x.name for x in tier.toys])
    header = ["Rank", "Method", *[f"\\texttt{{{escape(x.name)}}}" for x in tier.toys], "Tier score"]
    rows = [
        [_rank(r), _method(r), *[_cell(t.cell(r.method, x.name)) for x in tier.toys], _score(r)]
        for r in sub.rows
        if any(t.cell(r.method, x.name) for x in tier.toys)
    ]
    return tabular(
        header,
        rows,
        "cl" + "c" * (len(header) - 2),
        f"{escape(tier.title)}: {escape(t.metric)} ({escape(t.direction.label)}), mean over seeds "
        "[95% bootstrap CI]" + (f"; {escape(tier.note)}" if tier.note else ""),
        _notes(t),
    )


def robustness_tex(board: Board) -> str:
    """The ranks of the submitted methods under every ranking criterion, with the mean rank."""
    rob = board.robustness
    assert rob is not None
    header = ["Method", *[f"\\texttt{{{escape(c.criterion)}}}" for c in rob.criteria], "Mean rank"]
    rows = [
        [
            escape(m),
            *[escape(criterion_cell(c, m)) for c in rob.criteria],
            f"${rob.mean_rank[m]:.2f}$" if m in rob.mean_rank else NA,
        ]
        for m in rob.methods
    ]
    taus = "; ".join(
        f"{x.criterion}/{y.criterion} {tau_text(rob.tau[(x.criterion, y.criterion)])}"
        for i, x in enumerate(rob.criteria)
        for y in rob.criteria[i + 1 :]
    )
    notes = [f"Kendall tau-b: {taus}"]
    if note := papers_blind_spot(board):
        notes.append(note.replace("`", ""))
    return tabular(
        header,
        rows,
        "l" + "c" * (len(header) - 1),
        "Ranking robustness: rank (score) of the submitted methods under each criterion on the overall "
        "table's toy models; a+b = mean of the ranks under a and b; reference rows left out",
        tuple(escape(n) for n in notes),
    )


def render_tables(board: Board, metric: str | None = None) -> dict[str, str]:
    """File name -> LaTeX source: ``overall.tex`` and ``tier<k>.tex`` for ``metric`` (default: the
    headline), and ``robustness.tex``."""
    name = metric or board.headline
    if name not in board.metrics:
        known = ", ".join(board.metrics)
        raise UnknownMetricError(f"metric {name!r} is not in these results (they hold: {known})")
    if name == board.headline:
        out = render_latex(board)
    else:
        t = board.metrics[name]
        out = {"overall.tex": _overall(board, t), **{f"{x.key}.tex": _tier(board, t, x) for x in board.tiers}}
    if board.robustness is not None:
        out["robustness.tex"] = robustness_tex(board)
    return out
