"""``pdbench run``: run toy x method x seed cells and print the leaderboard of what ran."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.commands.leaderboard import DEFAULT_RESULTS, print_leaderboard
from benchmark.method import Budget
from benchmark.registry import METHODS, TOY_MODELS
from benchmark.suites import SUITES, suite_cells


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in _csv(text) or []]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.runner import run_grid

    cells, suite = suite_cells(args.suite, _csv(args.toys), _csv(args.methods), args.seeds)
    for c in {c.toy for c in cells}:
        TOY_MODELS.get(c)  # fail fast, with the known names, on a typo
    for m in {c.method for c in cells}:
        METHODS.get(m)
    budget = Budget(steps=args.steps, scale=suite.budget.scale)
    run_grid(cells, args.results, budget=budget, device=args.device, rerun=args.rerun,
             log=lambda msg: print(msg, file=sys.stderr, flush=True))
    if not args.no_leaderboard:
        return print_leaderboard(args.results, cells)
    return 0


def add_parser(sub, common) -> None:
    p = sub.add_parser("run", parents=[common], help="run toy x method x seed cells, one JSON result each")
    p.add_argument("--suite", default="quick", choices=sorted(SUITES), help="which cells (default: quick)")
    p.add_argument("--toys", help="comma-separated toy models (default: the suite's)")
    p.add_argument("--methods", help="comma-separated methods, or module:Class (default: all)")
    p.add_argument("--seeds", type=_seeds, help="comma-separated seeds (default: the suite's)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--steps", type=int, help="override every method's number of optimisation steps")
    p.add_argument("--rerun", action="store_true", help="run cells again even if a result is stored")
    p.add_argument("--no-leaderboard", action="store_true", help="do not print the leaderboard afterwards")
    p.set_defaults(fn=cmd_run)
