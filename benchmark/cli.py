"""The ``pdbench`` command line: list, run, leaderboard."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from benchmark.method import Budget
from benchmark.registry import METHODS, METRICS, TOY_MODELS, RegistryError, load_plugin
from benchmark.results import Cell, load_results
from benchmark.suites import SUITES, suite_cells

DEFAULT_RESULTS = Path("pdbench-results")


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in _csv(text) or []]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None


def cmd_list(args: argparse.Namespace) -> int:
    what = args.what
    if what in ("toys", "all"):
        rows = []
        for name in TOY_MODELS.names():
            spec = TOY_MODELS.get(name)().spec
            rows.append([name, spec.tier, spec.gt_status, ", ".join(spec.decomposed), spec.description])
        print(tabulate(sorted(rows, key=lambda r: (r[1], r[0])),
                       headers=["toy model", "tier", "ground truth", "decomposed", "description"]))
        print()
    if what in ("methods", "all"):
        rows = []
        for name, cls in METHODS.items():
            flags = "reference row" + (", sees ground truth" if cls.sees_ground_truth else "") \
                if cls.reference_row else ""
            rows.append([name, cls.version, flags, cls.paper])
        print(tabulate(rows, headers=["method", "version", "", "paper"]))
        print()
    if what in ("metrics", "all"):
        rows = [[n, m.version, "higher" if m.higher_is_better else "lower", m.description]
                for n, m in METRICS.items()]
        print(tabulate(rows, headers=["metric", "version", "better", "definition"], maxcolwidths=[None] * 3 + [80]))
    for reg in (TOY_MODELS, METHODS, METRICS):
        for module, err in reg.import_errors.items():
            print(f"warning: {module} failed to import: {err.strip().splitlines()[-1]}", file=sys.stderr)
    return 0


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
        return _print_leaderboard(args.results, cells)
    return 0


def _print_leaderboard(results_dir: Path, cells: list[Cell] | None = None, out: Path | None = None) -> int:
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
    return _print_leaderboard(args.results, out=args.out or args.results / "LEADERBOARD.md")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                        help="import a Python file that registers toy models, methods or metrics (repeatable)")
    p = argparse.ArgumentParser(prog="pdbench", description=__doc__, parents=[common])
    sub = p.add_subparsers(dest="command", required=True)

    pl = sub.add_parser("list", parents=[common], help="list toy models, methods and metrics")
    pl.add_argument("what", nargs="?", default="all", choices=["all", "toys", "methods", "metrics"])
    pl.set_defaults(fn=cmd_list)

    pr = sub.add_parser("run", parents=[common], help="run toy x method x seed cells, one JSON result each")
    pr.add_argument("--suite", default="quick", choices=sorted(SUITES), help="which cells (default: quick)")
    pr.add_argument("--toys", help="comma-separated toy models (default: the suite's)")
    pr.add_argument("--methods", help="comma-separated methods, or module:Class (default: all)")
    pr.add_argument("--seeds", type=_seeds, help="comma-separated seeds (default: the suite's)")
    pr.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default: %(default)s)")
    pr.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    pr.add_argument("--steps", type=int, help="override every method's number of optimisation steps")
    pr.add_argument("--rerun", action="store_true", help="run cells again even if a result is stored")
    pr.add_argument("--no-leaderboard", action="store_true", help="do not print the leaderboard afterwards")
    pr.set_defaults(fn=cmd_run)

    pb = sub.add_parser("leaderboard", parents=[common], help="render the leaderboard from stored results")
    pb.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default: %(default)s)")
    pb.add_argument("--out", type=Path, help="Markdown file to write (default: RESULTS/LEADERBOARD.md)")
    pb.set_defaults(fn=cmd_leaderboard)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for path in args.plugin:
            load_plugin(path)
        return args.fn(args)
    except (RegistryError, KeyError) as exc:
        print(f"pdbench: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
