"""The leaderboard as printed to a terminal (``pdbench run``, ``pdbench leaderboard --print``): tables no wider
than a terminal (120 columns by default), the legend wrapped to that width.

The tables use tabulate's ``github`` layout, so a copy still pastes as Markdown, but columns are shortened
(per-cell intervals are left to ``LEADERBOARD.md`` and ``index.html``; long names are cut with an ellipsis)
and a table with more columns than fit is split into several, each repeating the rank and method columns.
Strings from the result files go through :func:`term_escape`: no control characters (so no terminal escape
sequences), no line breaks, and ``|`` escaped.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from tabulate import tabulate

from leaderboard.data import Board, Cell, Row, Table, build_board, fmt, fmt_rank, replicate_label
from leaderboard.markdown import (
    CAP_MARK,
    ERR_MARK,
    REF_MARK,
    UNCONVERGED_MARK,
    beats_text,
    cpu_success_text,
    legend,
    stat_text,
    vs_refs_text,
    wall_text,
)

WIDTH = 120
NAME_WIDTH = 22  # method names
TOY_WIDTH = 20  # toy-model column headers
MAX_FAILED = 20  # failed cells listed before "... and k more"

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]+")


def term_escape(text: object, limit: int | None = None) -> str:
    """A result-file string safe to print inside a terminal table: control characters (escape sequences,
    line breaks, tabs, bidirectional overrides) become one space, ``|`` becomes ``\\|``, and the text is cut
    to ``limit`` characters with an ellipsis."""
    s = _CONTROL.sub(" ", str(text)).strip()
    if limit is not None and len(s) > limit:
        s = s[: max(limit - 1, 1)] + "…"
    return s.replace("|", "\\|")


def _method(row: Row) -> str:
    return term_escape(row.method.name, NAME_WIDTH) + (f" {REF_MARK}" if row.method.reference_row else "")


def _rank(row: Row) -> str:
    return fmt_rank(row.rank) or ("ref" if row.method.reference_row else "-")


def _cell(c: Cell | None) -> str:
    if c is None:
        return "-"
    if c.all_failed:
        return f"ERROR {ERR_MARK}{len(c.errors)}/{c.n}"
    text = fmt(c.score.mean)
    if c.errors:
        text += f" {ERR_MARK}{len(c.errors)}/{c.n}"
    if c.na:
        text += f" N/Ax{len(c.na)}"
    if c.capped:
        text += f" {CAP_MARK}{len(c.capped)}"
    if c.unconverged:
        text += f" {UNCONVERGED_MARK}{len(c.unconverged)}"
    return text


def _table_width(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def _fit(header: list[str], rows: list[list[str]], fixed: int, width: int) -> list[str]:
    """``header``/``rows`` as one or more tables no wider than ``width``: the first ``fixed`` columns repeat in
    each, the others are spread over as few tables as fit (at least one column each)."""

    def render(cols: list[int]) -> str:
        return tabulate(
            [[r[i] for i in cols] for r in rows],
            headers=[header[i] for i in cols],
            tablefmt="github",
            disable_numparse=True,
        )

    rest = list(range(fixed, len(header)))
    out: list[str] = []
    while rest:
        take = 1
        while take < len(rest) and _table_width(render([*range(fixed), *rest[: take + 1]])) <= width:
            take += 1
        out.append(render([*range(fixed), *rest[:take]]))
        rest = rest[take:]
    return out or [render(list(range(fixed)))]


def _overall(board: Board, width: int) -> list[str]:
    t = board.overall
    tiers = sorted({x.tier for x in t.toys})
    header = [
        "rank",
        "method",
        "score [95% CI]",
        "vs refs",
        "beats",
        "success",
        *[f"T{k}" for k in tiers],
        "err",
        "s/cell",
        "CPU-s/ok",
    ]
    rows = [
        [
            _rank(r),
            _method(r),
            stat_text(r.score) + ("" if r.complete else " (partial)"),
            vs_refs_text(r),
            beats_text(r),
            f"{r.n_success}/{r.n_runs}",
            *[fmt(r.by_tier[k].mean) if k in r.by_tier else "-" for k in tiers],
            f"{ERR_MARK}{r.n_errors}" if r.n_errors else "0",
            wall_text(r.wall_time_s),
            cpu_success_text(r.cpu_per_success_s),
        ]
        for r in t.rows
    ]
    return _fit(header, rows, 2, width)


def _tier(board: Board, t: Table, width: int) -> list[str]:
    header = ["rank", "method", *[term_escape(x.name, TOY_WIDTH) for x in t.toys], "tier score", "success"]
    rows = [
        [
            _rank(r),
            _method(r),
            *[_cell(board.cell(r.method.name, x.name)) for x in t.toys],
            fmt(r.score.mean) + ("" if r.complete else " (partial)"),
            f"{r.n_success}/{r.n_runs}",
        ]
        for r in t.rows
    ]
    return _fit(header, rows, 2, width)


def _wrap(text: str, width: int) -> str:
    return textwrap.fill(text, width=width, break_long_words=True, break_on_hyphens=False)


def terminal_table(results: list[dict[str, Any]] | Board, width: int = WIDTH, tiers: bool = True) -> str:
    """The leaderboard of ``results`` (result records or a built :class:`Board`) as terminal text no wider
    than ``width`` columns: the overall table, then (``tiers``) one table per tier with the mean of each
    (toy model, method) cell, then the failed cells, one line each."""
    board = results if isinstance(results, Board) else build_board(results)
    parts = [_wrap(legend(board, esc=term_escape).replace("`", ""), width), ""]
    parts += [_wrap(board.overall.title, width)]
    if board.overall.note:
        parts += [_wrap(f"The overall table {board.overall.note}.", width)]
    parts += ["", *_blocks(_overall(board, width))]
    if tiers:
        for t in board.tiers:
            parts += [_wrap(t.title + (f" ({t.note})" if t.note else ""), width), "", *_blocks(_tier(board, t, width))]
        parts += [
            _wrap(
                "Tier tables show the mean over seeds of each cell; `pdbench leaderboard` writes the intervals "
                "(LEADERBOARD.md, index.html).".replace("`", ""),
                width,
            ),
            "",
        ]
    failed = sorted((c.toy, c.method, s, e) for c in board.cells.values() for s, e in c.errors.items())
    if failed:
        parts += [f"Failed cells ({len(failed)}):"]
        for toy, method, seed, err in failed[:MAX_FAILED]:
            line = f"  {term_escape(toy)} / {term_escape(method)} / seed {replicate_label(seed)}: {term_escape(err)}"
            parts += [line if len(line) <= width else line[: width - 1] + "…"]
        if len(failed) > MAX_FAILED:
            parts += [f"  ... and {len(failed) - MAX_FAILED} more (LEADERBOARD.md lists them all)"]
        parts += [""]
    return "\n".join(parts).rstrip("\n") + "\n"


def _blocks(tables: list[str]) -> list[str]:
    out: list[str] = []
    for t in tables:
        out += [t, ""]
    return out
