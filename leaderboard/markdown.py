"""The Markdown leaderboard (``LEADERBOARD.md``): an overall table, ranking robustness, one table per tier,
then one compact table per metric (:mod:`leaderboard.markdown_metrics`).

Every number comes from :func:`leaderboard.data.build_board`; the text has no timestamp, so the same
results always give the same file. Every string that comes from a result file (method and toy names,
versions, papers, error messages) goes through :func:`md_escape`, so it cannot add a row, a column or
raw HTML to a table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tabulate import tabulate

from leaderboard.data import MIN_GAP, Board, Cell, Row, Table, build_board, fmt, fmt_rank, replicate_label
from leaderboard.markdown_metrics import metrics_markdown, robustness_markdown
from leaderboard.stats import SUCCESS_THRESHOLD
from leaderboard.text import CAP_MARK, ERR_MARK, REF_MARK, UNCONVERGED_MARK, interval_text, md_escape, stat_text

__all__ = [
    "CAP_MARK",
    "ERR_MARK",
    "REF_MARK",
    "UNCONVERGED_MARK",
    "interval_text",
    "md_escape",
    "render_markdown",
    "stat_text",
]


def cell_text(c: Cell | None) -> str:
    if c is None:
        return "-"
    if c.all_failed:
        return f"ERROR {ERR_MARK}{len(c.errors)}/{c.n}"
    text = stat_text(c.score)
    if c.errors:
        text += f" {ERR_MARK}{len(c.errors)}/{c.n}"
    if c.na:
        text += f" (N/A x{len(c.na)})"
    if c.capped:
        text += f" {CAP_MARK}{len(c.capped)}"
    if c.unconverged:
        text += f" {UNCONVERGED_MARK}{len(c.unconverged)}"
    return text


def method_text(row: Row, esc: Callable[[str], str] = md_escape) -> str:
    return esc(row.method.name) + (f" {REF_MARK}" if row.method.reference_row else "")


def success_text(row: Row) -> str:
    return f"{row.n_success}/{row.n_runs} [{fmt(row.success.low, 2)}, {fmt(row.success.high, 2)}]"


def vs_refs_text(row: Row) -> str:
    """The mean baseline-normalised headline score (:mod:`leaderboard.baseline`)."""
    b = row.baseline
    return "-" if b is None else "N/A" if b.normalised is None else f"{b.normalised:+.3f}"


def beats_text(row: Row) -> str:
    """On how many toy models the method beats every reference row (``-`` for a reference row)."""
    b = row.baseline
    return "-" if b is None or row.method.reference_row else f"{b.beats}/{b.of}"


def wall_text(x: float | None) -> str:
    if x is None:
        return "-"
    return "<0.01" if x < 0.01 else f"{x:.2f}" if x < 10 else f"{x:.0f}"


def cpu_success_text(x: float | None) -> str:
    """CPU seconds per successful run; "never" where no run succeeded."""
    return "never" if x is None else wall_text(x)


def overall_rows(board: Board) -> tuple[list[str], list[list[str]]]:
    table = board.overall
    tiers = sorted({t.tier for t in table.toys})
    header = [
        "rank",
        "method",
        "score [95% CI]",
        "vs refs",
        "beats refs",
        "success",
        *[f"T{k}" for k in tiers],
        "errors",
        "time/cell (s)",
        "CPU-s/success",
    ]
    rows = []
    for r in table.rows:
        score = stat_text(r.score) + ("" if r.complete else " (partial)")
        rows.append(
            [
                fmt_rank(r.rank) or ("ref" if r.method.reference_row else "-"),
                method_text(r),
                score,
                vs_refs_text(r),
                beats_text(r),
                success_text(r),
                *[fmt(r.by_tier[k].mean) if k in r.by_tier else "-" for k in tiers],
                f"{ERR_MARK}{r.n_errors}" if r.n_errors else "0",
                wall_text(r.wall_time_s),
                cpu_success_text(r.cpu_per_success_s),
            ]
        )
    return header, rows


def tier_rows(board: Board, table: Table) -> tuple[list[str], list[list[str]]]:
    score = "tier score [95% CI]" if table.tier is not None else "score [95% CI]"
    header = ["rank", "method", *[md_escape(t.name) for t in table.toys], score, "success"]
    rows = []
    for r in table.rows:
        rows.append(
            [
                fmt_rank(r.rank) or ("ref" if r.method.reference_row else "-"),
                method_text(r),
                *[cell_text(board.cell(r.method.name, t.name)) for t in table.toys],
                stat_text(r.score) + ("" if r.complete else " (partial)"),
                success_text(r),
            ]
        )
    return header, rows


def legend(board: Board, esc: Callable[[str], str] = md_escape) -> str:
    """The key to the tables; ``esc`` escapes the one string from the result files (the headline metric)."""
    return (
        f"Headline score: `{esc(board.headline)}` (one-to-one matched mechanism recovery, 1 = every mechanism "
        f"recovered by its own component). The overall table ranks the {board.overall.track} track; the other "
        f"tracks have their own tables below. A cell's runs are its (toy instance, method seed) pairs; scores "
        f"are means over runs with 95% bootstrap intervals; "
        f"success = runs scoring >= {SUCCESS_THRESHOLD} (Wilson 95% interval); rank = 95% rank band from a "
        f"paired bootstrap over (toy model, run) cells, so methods whose bands overlap are statistically "
        f"tied. Only submitted methods are ranked; `{REF_MARK}` marks reference rows (oracle, random, whole, "
        f"pca, ...). `{ERR_MARK}k/n`: k of n runs failed; a failed run scores 0 and is never dropped. "
        f"`{CAP_MARK}k`: k seeds reached the suite's CPU-time cap and stopped before their default steps. "
        f"`{UNCONVERGED_MARK}k`: k runs whose training loss was still falling at the end (the median over the "
        f"last fifth of the logged losses more than 5% below the fifth before). "
        f"`vs refs`: the mean over toy models of (s - b) / (1 - b), where b is the best reference row's score on "
        f"that toy model (the oracle, which sees the ground truth, left out): 0 = as good as the best reference, "
        f"1 = perfect, below 0 = worse; N/A where b > 0.99 (a reference row already solves the toy model). "
        f"`beats refs`: the toy models on which the method's mean "
        f"beats every reference row's (the oracle left out). `CPU-s/success`: the CPU seconds of all the "
        f"method's runs in the table over its successful runs, the compute one success costs (never: none "
        f"succeeded)."
    )


def heldout_markdown(board: Board) -> list[str]:
    """Public against held-out headline instances, per method; ``!`` where the intervals do not overlap."""
    if not board.heldout:
        return []
    rows = [
        [
            md_escape(g.method.name) + (f" {REF_MARK}" if g.method.reference_row else ""),
            stat_text(g.public),
            stat_text(g.heldout),
            "-" if g.gap is None else f"{g.gap:+.3f}",
            "! gap beyond the intervals" if g.flagged else "",
        ]
        for g in board.heldout
    ]
    return [
        "## Public and held-out instances",
        "",
        "The same headline toy models, on their public instances (0-2) and on instances drawn from a held-out "
        "seed (`pdbench run --suite headline --heldout-seed`). A method tuned to the public instances scores "
        f"lower on the held-out ones; `!` marks a gap of at least {MIN_GAP} whose two intervals do not overlap.",
        "",
        tabulate(rows, headers=["method", "public", "held-out", "gap", ""], tablefmt="github", disable_numparse=True),
        "",
    ]


def render_markdown(results: list[dict[str, Any]] | Board, figure: bool = False) -> str:
    """The whole leaderboard as Markdown, from result records or a built :class:`Board`; ``figure`` links the
    score-by-tier figure that :mod:`leaderboard.build` writes beside it."""
    board = results if isinstance(results, Board) else build_board(results)
    parts = ["# Leaderboard", "", legend(board), ""]
    header, rows = overall_rows(board)
    parts += [f"## {board.overall.title}", ""]
    if board.overall.note:
        parts += [f"The overall table {board.overall.note}.", ""]
    parts += [tabulate(rows, headers=header, tablefmt="github", disable_numparse=True), ""]
    if figure:
        parts += ["![score by tier](figures/score_by_tier.png)", ""]
    parts += heldout_markdown(board)
    parts += robustness_markdown(board)
    for table in board.tiers:
        header, rows = tier_rows(board, table)
        parts += [f"## {table.title}", ""]
        if table.note:
            parts += [f"*{table.note}.*", ""]
        parts += [tabulate(rows, headers=header, tablefmt="github", disable_numparse=True), ""]
    parts += metrics_markdown(board)
    failed = [(c.toy, c.method, s, e) for c in board.cells.values() for s, e in sorted(c.errors.items())]
    if failed:
        parts += [
            "## Failed cells",
            "",
            tabulate(
                [
                    [md_escape(t), md_escape(m), replicate_label(s), md_escape(e.splitlines()[0][:160]) if e else ""]
                    for t, m, s, e in sorted(failed)
                ],
                headers=["toy model", "method", "seed", "error"],
                tablefmt="github",
                disable_numparse=True,
            ),
            "",
        ]
    parts += [
        "## Toy models",
        "",
        tabulate(
            [
                [md_escape(x) for x in (t.name, t.tier, t.gt_status, t.version, t.weights_sha256[:16])]
                for t in board.toys
            ],
            headers=["toy model", "tier", "ground truth", "version", "weights SHA-256 (prefix)"],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
    ]
    parts += [
        "## Methods",
        "",
        tabulate(
            [
                [md_escape(m.name), md_escape(m.version), "yes" if m.reference_row else "", md_escape(m.paper)]
                for m in board.methods
            ],
            headers=["method", "version", "reference row", "paper"],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
    ]
    return "\n".join(parts)


def headline_markdown(board: Board) -> str:
    """The overall table, then each other track's own overall table (compact), for a README."""
    header, rows = overall_rows(board)
    parts = [tabulate(rows, headers=header, tablefmt="github", disable_numparse=True)]
    for table in board.tiers:
        if table.tier is None:
            compact = [
                [
                    fmt_rank(r.rank) or ("ref" if r.method.reference_row else "-"),
                    method_text(r),
                    stat_text(r.score),
                    success_text(r),
                ]
                for r in table.rows
            ]
            parts += [
                f"\n**{table.title}**" + (f" ({table.note})" if table.note else "") + ":\n",
                tabulate(
                    compact,
                    headers=["rank", "method", "score [95% CI]", "success"],
                    tablefmt="github",
                    disable_numparse=True,
                ),
            ]
    return "\n".join(parts)
