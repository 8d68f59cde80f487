"""``pdbench run``: run toy x method x seed cells and print the leaderboard of what ran.

Cells run in parallel worker processes (``--jobs``), each under a time limit and a memory guard; cells
already stored are skipped, so the same command resumes an interrupted run.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from benchmark import heldout
from benchmark.commands.leaderboard import DEFAULT_RESULTS, print_leaderboard
from benchmark.options import (
    add_execution_arguments,
    add_hparams_argument,
    csv_list,
    limit,
    positive_int,
    requested_hparams,
    seeds,
)
from benchmark.registry import METHODS, TOY_MODELS, RegistryError
from benchmark.suites import SUITES, suite_cells


def check_device(device: str) -> str | None:
    """None when ``device`` can be used here, else why not."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        return f"--device {device!r} is not a torch device ({exc})"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device} asked for, but CUDA is not available on this machine"
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        return f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    if dev.type not in ("cpu", "cuda", "mps"):
        return f"--device {device}: only cpu, cuda and mps are supported"
    return None


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.catalog import plugin_catalog
    from benchmark.executors import Limits
    from benchmark.runner import run_grid, stderr_log

    plugins = args.plugin + args.verb_plugin

    problem = check_device(args.device)
    if problem:
        print(f"pdbench: error: {problem}", file=sys.stderr)
        return 2
    try:
        known, plugin_toys = plugin_catalog(plugins)  # plugin files are read in a child process, never imported here
    except RegistryError as exc:
        print(f"pdbench: error: {exc}", file=sys.stderr)
        return 2
    methods = sorted(known) if args.methods is None else csv_list(args.methods)
    try:
        secret = None if args.heldout_seed is None else heldout.resolve_seed(args.heldout_seed)
        cells, suite = suite_cells(args.suite, csv_list(args.toys), methods, args.seeds, secret)
    except ValueError as exc:
        print(f"pdbench: error: {exc}", file=sys.stderr)
        return 2
    if secret is not None:
        heldout.record(args.results, secret)  # its SHA-256 only
    if not cells:
        print("pdbench: error: the selection has no cells", file=sys.stderr)
        return 2
    for c in {c.toy for c in cells} - set(plugin_toys):
        TOY_MODELS.get(c)  # fail fast, with the known names, on a typo
    methods = sorted({c.method for c in cells})
    for m in methods:
        if m not in known and ":" not in m:
            METHODS.get(m)  # raises with the known names and a suggestion
    hparams = requested_hparams(args, methods)
    problem = check_hparams(hparams, methods, cells, args.results)
    if problem:
        print(f"pdbench: error: {problem}", file=sys.stderr)
        return 2
    limits = Limits(time_s=args.time_limit, memory_mb=args.memory_limit_mb)
    previous = signal.signal(signal.SIGTERM, _terminate)  # `kill` stops workers as Ctrl-C does
    try:
        run_grid(
            cells,
            args.results,
            device=args.device,
            rerun=args.rerun,
            plugins=plugins,
            log=stderr_log,
            executor=args.executor,
            jobs=args.jobs,
            limits=limits,
            budgets=suite.budgets(methods, args.steps),
            retry_errors=args.retry_errors,
            budget=suite.budget_for("", args.steps),
            cells_per_worker=args.cells_per_worker,
            threads=args.threads,
            hparams=hparams,
            seed_groups=args.seeds_together,
            share_tail=args.share_tail,
        )
    except KeyboardInterrupt:
        print("\ninterrupted: every finished cell is stored; run the same command again to resume", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"pdbench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not args.no_leaderboard:
        return print_leaderboard(args.results, cells)
    return 0


def check_hparams(hparams: dict[str, dict], methods: list[str], cells: list, results: Path) -> str | None:
    """Why ``--hparams`` cannot be used as given (None where it can): a method that is not in the run, a
    built-in method's unknown key or wrong type, or a stored result of the same cell run with other
    overrides (a folder never mixes cells run with and without them: use another ``--results``)."""
    import json

    for m, hp in hparams.items():
        if m not in methods:
            return f"--hparams names method {m!r}, which this run does not include ({', '.join(methods)})"
        cls = METHODS.builtin(m) if m in METHODS else None
        if cls is not None:
            try:
                cls(**hp)
            except (TypeError, ValueError) as exc:
                return str(exc)
    for c in cells:
        path = c.path(results)
        if not path.exists():
            continue
        try:
            stored = json.loads(path.read_text()).get("method", {}).get("overrides") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if stored != hparams.get(c.method, {}):
            return (
                f"{path} was run with hyperparameter overrides {stored or 'none'}, this run with "
                f"{hparams.get(c.method) or 'none'}: a folder never mixes them; use another --results folder"
            )
    return None


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def add_parser(sub, common) -> None:
    p = sub.add_parser("run", parents=[common], help="run toy x method x seed cells, one JSON result each")
    p.add_argument("--suite", default="quick", choices=sorted(SUITES), help="which cells (default: quick)")
    p.add_argument("--toys", help="comma-separated toy models (default: the suite's)")
    p.add_argument("--methods", help="comma-separated methods, or module:Class (default: all)")
    p.add_argument("--seeds", type=seeds, help="comma-separated seeds (default: the suite's)")
    p.add_argument(
        "--heldout-seed",
        metavar="S|env",
        help="with --suite headline: score toy instances drawn from seed S instead of the public 0-2; 'env' "
        f"reads a secret from ${heldout.ENV} (only its SHA-256 is stored, in RESULTS/{heldout.RECORD})",
    )
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--steps", type=positive_int, help="override every method's number of optimisation steps")
    add_execution_arguments(p)
    add_hparams_argument(p)
    p.add_argument(
        "--time-limit",
        type=limit,
        default=3600.0,
        metavar="SECONDS",
        help="wall-clock limit of one cell, or 'none' (default: %(default)s)",
    )
    p.add_argument(
        "--memory-limit-mb",
        type=limit,
        default=None,
        metavar="MIB",
        help="memory guard: the most resident memory one worker may use "
        "(default: 80%% of the machine's memory shared among the workers)",
    )
    p.add_argument(
        "--seeds-together",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train an uncapped (toy, method)'s seeds as one batched model where the method can (l3d, apd, spd, "
        "vpd, spd-main): the same decompositions, bit for bit, in one worker. Default: only where that is faster "
        "than the seeds in turn (l3d); --no-seeds-together: never (docs/running.md)",
    )
    p.add_argument(
        "--share-tail",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="local executor: in the run's last round, start the waiting cells at once on extra workers (up to "
        "--jobs minus one) so that they share the cores rather than wait: 3 equal cells on 2 cores take 1.5 cells' "
        "time, not 2 (default: on; memory permitting; docs/running.md)",
    )
    p.add_argument(
        "--cells-per-worker",
        type=positive_int,
        default=None,
        metavar="N",
        help="restart a worker process after N cells (1: a fresh process per cell; default: never)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        metavar="N",
        help="torch intra-op threads per worker (default: 1; the toy models are small)",
    )
    p.add_argument("--no-leaderboard", action="store_true", help="do not print the leaderboard afterwards")
    p.set_defaults(fn=cmd_run, load_plugins_here=False)  # plugins run in the workers only
