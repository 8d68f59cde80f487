"""A single static HTML page (``index.html``): every table, sortable and filterable, with no server and no
network (CSS and JavaScript are inline).

The page is the Jinja2 template ``templates/index.html.j2`` with autoescaping on, so every string that comes
from a result file (method and toy names, error messages) is HTML-escaped; this module only turns the
:class:`~leaderboard.data.Board` into plain rows and cells for it. The tables are rendered here, so the page
reads fine without JavaScript; the script only sorts and filters. The state lives in the URL hash, so a view
can be linked to and tested headlessly: ``index.html#sort=overall.2.desc&q=pca&refs=0&table=tier1`` sorts the
overall table by its third column (descending), keeps methods whose name contains "pca", hides reference rows
and shows only tier 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from leaderboard.data import Board, Cell, Row, Stat, Table, fmt, fmt_rank
from leaderboard.markdown import CAP_MARK, ERR_MARK, legend, wall_text

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


@dataclass
class Section:
    key: str
    title: str
    note: str
    head: list[Th]
    rows: list[HtmlRow]


def _v(x: float | None) -> str:
    return "" if x is None else repr(round(float(x), 6))


def _stat_td(s: Stat, suffix: str = "", marks: list[Mark] | None = None) -> Td:
    if s.mean is None:
        return Td("-", v="")
    ci = "" if s.low is None else f"[{fmt(s.low, 2)}, {fmt(s.high, 2)}]"
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
        Th("success"),
        *[Th(f"T{k}", title=f"tier {k} score") for k in tiers],
        Th("errors"),
        Th("time/cell (s)"),
    ]
    rows = [
        _row(
            r,
            [
                _rank_td(r),
                Td(r.method.name),
                _stat_td(r.score, _partial(r)),
                _success_td(r),
                *[_stat_td(r.by_tier[k]) if k in r.by_tier else Td("-", v="") for k in tiers],
                Td(
                    f"{ERR_MARK}{r.n_errors}" if r.n_errors else "0", v=str(r.n_errors), cls="err" if r.n_errors else ""
                ),
                Td(wall_text(r.wall_time_s), v=_v(r.wall_time_s)),
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


def _legend(board: Board) -> list[tuple[str, bool]]:
    """The legend as (text, is code) pieces: the Markdown legend's `code` spans become <code> elements."""
    parts = re.split(r"`([^`]*)`", legend(board, esc=str))
    return [(p, i % 2 == 1) for i, p in enumerate(parts) if p]


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
    sections = [_overall(board), *(_tier(board, t) for t in board.tiers)]
    return _template().render(legend=_legend(board), sections=sections)
