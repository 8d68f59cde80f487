"""``pdbench leaderboard``: regenerate every leaderboard artefact from stored results alone.

``pdbench leaderboard --results leaderboard/results`` writes Markdown, CSV, LaTeX, a static HTML page and
figures into ``leaderboard/`` (see :mod:`leaderboard.build`); ``--check`` only says whether the files
there are up to date (exit 1 if not), which is what CI runs. It writes only into a folder it owns: new,
empty, or carrying the ``.pdbench-leaderboard`` marker of an earlier run.

Heavy modules (the results loader, the leaderboard renderers) are imported inside the functions, so that
building the ``pdbench`` parser stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmark.results import Cell

DEFAULT_RESULTS = Path("pdbench-results")


def print_leaderboard(results_dir: Path, cells: list[Cell] | None = None, out: Path | None = None) -> int:
    """Print the leaderboard of ``results_dir`` (restricted to ``cells``) to stdout as a terminal table
    (:func:`leaderboard.terminal.terminal_table`); ``out`` also gets the Markdown leaderboard. Used by ``run``."""
    from benchmark.results import load_results
    from leaderboard.data import BoardError, build_board
    from leaderboard.markdown import render_markdown
    from leaderboard.terminal import terminal_table

    results, problems = load_results(results_dir)
    for p in problems:
        print(f"warning: refused result file: {p}", file=sys.stderr)
    if cells is not None:
        wanted = set(cells)
        results = [r for r in results if r.cell in wanted]
    if not results:
        print(f"no results in {results_dir}", file=sys.stderr)
        return 1
    try:
        board = build_board(results)
    except BoardError as exc:
        print(f"pdbench: error: {exc}", file=sys.stderr)
        return 1
    print(terminal_table(board))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_markdown(board))
        print(f"written to {out}", file=sys.stderr)
    return 0


def default_out(results: Path) -> Path:
    """``leaderboard/results`` -> ``leaderboard``; any other folder ``X`` -> ``X/leaderboard``."""
    return results.parent if results.name == "results" else results / "leaderboard"


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from benchmark.results import load_results
    from leaderboard.build import (
        OutputFolderError,
        check_output_folder,
        render_all,
        stale_files,
        update_readme,
        write_all,
    )
    from leaderboard.data import BoardError
    from leaderboard.latex_tables import UnknownMetricError
    from leaderboard.terminal import terminal_table

    if not args.results.is_dir():
        print(f"pdbench: error: results folder {args.results} does not exist", file=sys.stderr)
        return 2
    results, problems = load_results(args.results)
    for p in problems:
        print(
            f"warning: refused result file (left off the leaderboard; `pdbench validate` explains): {p}",
            file=sys.stderr,
        )
    if not results:
        print(f"pdbench: error: no valid results in {args.results}", file=sys.stderr)
        return 1
    out = args.out or default_out(args.results)
    if not args.check:
        try:  # before rendering: refuse a folder that is not ours at once
            check_output_folder(out, args.results)
        except OutputFolderError as exc:
            print(f"pdbench: error: {exc}", file=sys.stderr)
            return 2
    try:
        board, files = render_all(results, problems, metric=args.metric)
    except BoardError as exc:
        print(f"pdbench: error: {exc}", file=sys.stderr)
        return 1
    except UnknownMetricError as exc:
        print(f"pdbench: error: --metric: {exc}", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_files(out, files)
        if stale:
            print(
                f"{len(stale)} leaderboard artefact(s) in {out} are out of date with {args.results}:", file=sys.stderr
            )
            for s in stale:
                print(f"  {s}", file=sys.stderr)
            print(f"regenerate them with: pdbench leaderboard --results {args.results} --out {out}", file=sys.stderr)
            return 1
        print(f"the {len(files)} leaderboard artefacts in {out} are up to date ({len(results)} results)")
        return 0
    try:
        written = write_all(out, files, results=args.results)
    except OutputFolderError as exc:
        print(f"pdbench: error: {exc}", file=sys.stderr)
        return 2
    if args.readme is not None:
        fig = (out / "figures" / "score_by_tier.png").resolve()
        try:
            rel = fig.relative_to(args.readme.resolve().parent)
        except ValueError:
            rel = fig
        if update_readme(args.readme, board, rel.as_posix()):
            print(f"updated the leaderboard block of {args.readme}", file=sys.stderr)
    if args.print:
        print(terminal_table(board))
    print(
        f"{len(results)} results, {len(board.methods)} methods, {len(board.toys)} toy models -> {out}/ "
        f"({len(written)} of {len(files)} files changed)",
        file=sys.stderr,
    )
    return 0


def add_parser(sub, common) -> None:
    p = sub.add_parser(
        "leaderboard",
        parents=[common],
        help="regenerate the leaderboard (Markdown, LaTeX, CSV, HTML, figures) from stored results",
    )
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default: %(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        help="output folder: new, empty, or written before by this command (it carries a .pdbench-leaderboard "
        "marker); default: the parent of a folder named 'results', else RESULTS/leaderboard",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the artefacts in the output folder are not up to date",
    )
    p.add_argument(
        "--readme",
        type=Path,
        help="also put the headline table and a figure between the <!-- LEADERBOARD:START/END --> markers of this file",
    )
    p.add_argument("--print", action="store_true", help="also print the leaderboard as a terminal table")
    p.add_argument(
        "--metric",
        metavar="NAME",
        help="the metric of the LaTeX tables (latex/overall.tex, latex/tier<k>.tex; default: the headline). The "
        "committed board uses the headline, so --check with another metric reports those files as out of date",
    )
    p.set_defaults(fn=cmd_leaderboard)
