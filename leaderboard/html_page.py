"""A single static HTML page (``index.html``): every table, sortable and filterable, with no server and no
network (CSS and JavaScript are inline).

The page is the Jinja2 template ``templates/index.html.j2`` with autoescaping on, so every string that comes
from a result file (method and toy names, error messages) is HTML-escaped; this module only turns the
:class:`~leaderboard.data.Board` into plain rows and cells for it. The tables are rendered here, so the page
reads fine without JavaScript; the script only sorts and filters. The state lives in the URL hash, so a view
can be linked to and tested headlessly: ``index.html#sort=overall.2.desc&q=pca&refs=0&table=tier1`` sorts the
overall table by its third column (descending), keeps methods whose name contains "pca", hides reference rows
and shows only tier 1. The per-metric tables (one section per metric, :mod:`leaderboard.metric_scores`) are
switched by the metric selector: ``#metric=mmcs`` shows the ``mmcs`` one (the headline's by default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from leaderboard.data import Board, Cell, Row, Stat, Table, fmt, fmt_rank
from leaderboard.markdown import (
    CAP_MARK,
    ERR_MARK,
    UNCONVERGED_MARK,
    beats_text,
    cpu_success_text,
    legend,
    vs_refs_text,
    wall_text,
)
from leaderboard.markdown_metrics import (
    NA,
    criterion_cell,
    criterion_header,
    distance_header,
    flip_text,
    mean_rank_text,
    metric_cell_text,
    rank_text,
    tau_text,
)
from leaderboard.metric_scores import MetricCell, MetricTable
from leaderboard.notes import blind_spot, direction_text, metrics_text, papers_blind_spot, robustness_text
from leaderboard.text import interval_text

TEMPLATES = Path(__file__).parent / "templates"
TEMPLATE = "index.html.j2"


@dataclass
class Mark:
    """A marker after a cell's value: failed seeds or seeds stopped by the CPU-time cap."""

    cls: str
    title: str
    text: str


@dataclass
class Td:
    """One table cell: ``text`` then an optional interval, ``suffix`` and marks; ``v`` is the sort key."""

    text: str
    v: str | None = None  # data-v (numeric sort key, "" for none); None: no attribute
    ci: str = ""
    suffix: str = ""
    marks: list[Mark] = field(default_factory=list)
    cls: str = ""
    title: str = ""


@dataclass
class Th:
    label: str
    type: str = "num"
    title: str = ""


@dataclass
class HtmlRow:
    method: str
    ref: bool
    n_errors: int
    cells: list[Td]


Pieces = list[tuple[str, bool]]  # text with `code` spans: (text, is code)


@dataclass
class Section:
    key: str
    title: str
    note: str
    head: list[Th]
    rows: list[HtmlRow]
    paragraphs: list[Pieces] = field(default_factory=list)  # notes with code spans, after the table
    metric: str | None = None  # a per-metric section: shown when the metric selector picks it
    matrix: tuple[list[str], list[list[str]]] | None = None  # (header, rows) of a plain table (Kendall tau)
    items: list[Pieces] = field(default_factory=list)  # a list after the table (order flips)
    items_title: str = ""


def _v(x: float | None) -> str:
    return "" if x is None else repr(round(float(x), 6))


def _stat_td(s: Stat, suffix: str = "", marks: list[Mark] | None = None) -> Td:
    if s.mean is None:
        return Td("-", v="")
    ci = "" if s.low is None else interval_text(s)
    return Td(fmt(s.mean), v=_v(s.mean), ci=ci, suffix=suffix, marks=marks or [])


def _cell_td(c: Cell | None) -> Td:
    if c is None:
        return Td("-", v="")
    marks = []
    if c.errors:
        why = "; ".join(sorted(set(c.errors.values())))[:300]
        marks.append(
            Mark(
                "errmark",
                f"{len(c.errors)} of {c.n} seeds failed (scored 0): {why}",
                f"{ERR_MARK}{len(c.errors)}/{c.n}",
            )
        )
    if c.capped:
        marks.append(
            Mark(
                "capmark",
                f"{len(c.capped)} of {c.n} seeds reached the CPU-time cap and stopped early",
                f"{CAP_MARK}{len(c.capped)}",
            )
        )
    if c.unconverged:
        marks.append(
            Mark(
                "capmark",
                f"{len(c.unconverged)} of {c.n} runs ended with the training loss still falling",
                f"{UNCONVERGED_MARK}{len(c.unconverged)}",
            )
        )
    if c.all_failed:
        return Td("ERROR", v="0", marks=marks, cls="err")
    return _stat_td(c.score, marks=marks)


def _rank_td(r: Row) -> Td:
    if r.rank is None:
        return Td("ref" if r.method.reference_row else "-", v="")
    return Td(fmt_rank(r.rank), v=_v(r.rank[0]), title=f"mean rank {r.rank[0]:.2f}")


def _success_td(r: Row) -> Td:
    return Td(
        f"{r.n_success}/{r.n_runs}",
        v=_v(r.success.mean),
        title=f"Wilson 95% interval [{fmt(r.success.low, 2)}, {fmt(r.success.high, 2)}]",
    )


def _partial(r: Row) -> str:
    return "" if r.complete else " (partial)"


def _row(r: Row, cells: list[Td]) -> HtmlRow:
    return HtmlRow(r.method.name, r.method.reference_row, r.n_errors, cells)


def _overall(board: Board) -> Section:
    t = board.overall
    tiers = sorted({x.tier for x in t.toys})
    head = [
        Th("rank", title="95% rank band"),
        Th("method", "text"),
        Th("score [95% CI]"),
        Th("vs refs", title="mean over toy models of (s - b) / (1 - b), b = the best reference row's score"),
        Th("beats refs", title="toy models on which the method beats every reference row (the oracle left out)"),
        Th("success"),
        *[Th(f"T{k}", title=f"tier {k} score") for k in tiers],
        Th("errors"),
        Th("time/cell (s)"),
        Th("CPU-s/success", title="CPU seconds of all the method's runs over its successful runs"),
    ]
    rows = [
        _row(
            r,
            [
                _rank_td(r),
                Td(r.method.name),
                _stat_td(r.score, _partial(r)),
                Td(vs_refs_text(r), v=_v(r.baseline.normalised if r.baseline else None)),
                Td(beats_text(r), v="" if beats_text(r) == "-" else str(r.baseline.beats)),
                _success_td(r),
                *[_stat_td(r.by_tier[k]) if k in r.by_tier else Td("-", v="") for k in tiers],
                Td(
                    f"{ERR_MARK}{r.n_errors}" if r.n_errors else "0", v=str(r.n_errors), cls="err" if r.n_errors else ""
                ),
                Td(wall_text(r.wall_time_s), v=_v(r.wall_time_s)),
                Td(cpu_success_text(r.cpu_per_success_s), v=_v(r.cpu_per_success_s)),
            ],
        )
        for r in t.rows
    ]
    return _section(t, head, rows)


def _tier(board: Board, t: Table) -> Section:
    head = [
        Th("rank", title="95% rank band"),
        Th("method", "text"),
        *[Th(x.name, title=f"{x.gt_status} ground truth, version {x.version}") for x in t.toys],
        Th("tier score [95% CI]"),
        Th("success"),
    ]
    rows = [
        _row(
            r,
            [
                _rank_td(r),
                Td(r.method.name),
                *[_cell_td(board.cell(r.method.name, x.name)) for x in t.toys],
                _stat_td(r.score, _partial(r)),
                _success_td(r),
            ],
        )
        for r in t.rows
    ]
    return _section(t, head, rows)


def _section(t: Table, head: list[Th], rows: list[HtmlRow]) -> Section:
    return Section(t.key, t.title, t.note, head, rows)


def _pieces(text: str) -> Pieces:
    """Markdown inline text as (text, is code) pieces: its `code` spans become <code> elements."""
    parts = re.split(r"`([^`]*)`", text)
    return [(p, i % 2 == 1) for i, p in enumerate(parts) if p]


def _legend(board: Board) -> Pieces:
    return _pieces(legend(board, esc=str))


def _robustness(board: Board) -> Section | None:
    rob = board.robustness
    if rob is None:
        return None
    head = [Th("mean rank"), Th("method", "text"), *[Th(criterion_header(c)) for c in rob.criteria]]
    rows = [
        HtmlRow(
            m,
            False,
            0,
            [
                Td(mean_rank_text(rob, m), v=_v(rob.mean_rank.get(m))),
                Td(m),
                *[Td(criterion_cell(c, m), v=str(c.rank[m]) if m in c.rank else "") for c in rob.criteria],
            ],
        )
        for m in rob.methods
    ]
    names = [c.criterion for c in rob.criteria]
    matrix = (
        ["Kendall tau-b", *names],
        [[a, *[tau_text(rob.tau[(a, b)]) for b in names]] for a in names],
    )
    notes = [robustness_text(board)] + ([n] if (n := papers_blind_spot(board)) else [])
    items = [_pieces(flip_text(f.a, f.b, f.a_ahead, f.b_ahead, lambda x: f"`{x}`")) for f in rob.flips]
    return Section(
        "robustness",
        "Ranking robustness",
        "",
        head,
        rows,
        [_pieces(n) for n in notes],
        matrix=matrix,
        items=items or [[("No two methods swap places between these criteria.", False)]],
        items_title="Order flips between criteria",
    )


def _metric_td(c: MetricCell | None) -> Td:
    if c is None or c.score.mean is None:
        return Td(metric_cell_text(c), v="", cls="err" if c is not None and c.n_errors else "")
    marks = []
    if c.n_errors:
        marks.append(
            Mark("errmark", f"{c.n_errors} of {c.n_seeds} seeds failed", f"{ERR_MARK}{c.n_errors}/{c.n_seeds}")
        )
    if c.n_na:
        marks.append(Mark("namark", f"{c.n_na} of {c.n_seeds} seeds have no value (N/A)", f"{NA} x{c.n_na}"))
    return _stat_td(c.score, marks=marks)


def _metric(board: Board, i: int, t: MetricTable) -> Section:
    contested = {x.name for x in board.toys if x.contested}
    dist = distance_header(t)
    head = [
        Th("rank", title="rank among submitted methods"),
        Th("method", "text"),
        Th("overall [95% CI]", title="mean over the overall table's toy models"),
        *([Th(dist, title="the rank key: mean over toy models of the distance to the ideal")] if dist else []),
        *[
            Th(x + ("*" if x in contested else ""), title="contested: not in overall" if x in contested else "")
            for x in t.toys
        ],
    ]
    rows = [
        HtmlRow(
            r.method,
            r.reference,
            sum(c.n_errors for x in t.toys if (c := t.cell(r.method, x))),
            [
                Td(rank_text(r), v="" if r.rank is None else str(r.rank)),
                Td(r.method),
                _stat_td(r.score) if r.score.mean is not None else Td(NA, v=""),
                *([Td(NA if r.key is None else fmt(r.key), v=_v(r.key))] if dist else []),
                *[_metric_td(t.cell(r.method, x)) for x in t.toys],
            ],
        )
        for r in t.rows
    ]
    notes = [_pieces(n)] if (n := blind_spot(t)) else []
    return Section(f"m{i}", f"Scores by toy model: {direction_text(t)}", "", head, rows, notes, metric=t.metric)


@cache
def _template():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env.get_template(TEMPLATE)


def render_html(board: Board) -> str:
    rob = _robustness(board)
    sections = [_overall(board), *([rob] if rob else []), *(_tier(board, t) for t in board.tiers)]
    metrics = [_metric(board, i, t) for i, t in enumerate(board.metrics.values())]
    return _template().render(
        legend=_legend(board),
        sections=sections,
        metric_sections=metrics,
        metrics_note=_pieces(metrics_text(board)),
        headline=board.headline,
    )
