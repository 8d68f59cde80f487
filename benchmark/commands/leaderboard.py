"""``pdbench leaderboard``: render the leaderboard from stored results alone."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.results import Cell, load_results

DEFAULT_RESULTS = Path("pdbench-results")


def print_leaderboard(results_dir: Path, cells: list[Cell] | None = None, out: Path | None = None) -> int:
    from leaderboard.markdown import render_markdown

    results, problems = load_results(results_dir)
    for p in problems:
        print(f"warning: refused result file: {p}", file=sys.stderr)
    if cells is not None:
        wanted = set(cells)
        results = [r for r in results if Cell(**r["cell"]) in wanted]
    if not results:
        print(f"no results in {results_dir}", file=sys.stderr)
        return 1
    text = render_markdown(results)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"written to {out}", file=sys.stderr)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    return print_leaderboard(args.results, out=args.out or args.results / "LEADERBOARD.md")


def add_parser(sub, common) -> None:
    p = sub.add_parser("leaderboard", parents=[common], help="render the leaderboard from stored results")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default: %(default)s)")
    p.add_argument("--out", type=Path, help="Markdown file to write (default: RESULTS/LEADERBOARD.md)")
    p.set_defaults(fn=cmd_leaderboard)
