"""``pdbench submit METHOD``: check a method adapter, run it over a suite, store its results beside the others.

``METHOD`` is a plugin file (``my_method.py``), a ``module:Class`` reference (the current folder is importable,
as with ``python -m``), or a registered name (an entry point of the ``pdbench.methods`` group). The adapter
is first checked on a tiny toy model (:func:`check_adapter`: the interface, the shapes and finiteness of
what it returns, determinism for a fixed seed); then every cell of the suite runs through the normal runner
and its results are validated (``pdbench validate``) and put on the regenerated leaderboard.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.options import add_execution_arguments, add_hparams_argument, requested_hparams, seeds
from benchmark.registry import METHODS, RegistryError, load_plugin, resolve

CHECK_TOY = "block_mlp"  # hand-built tier-0 model: builds instantly, two decomposed matrices
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")


class SubmissionError(ValueError):
    """A method that cannot be submitted, with the reason and what to do."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""  # why it failed and how to fix it, or (when it passed) what was found
    warning: bool = False  # a failed warning does not block the submission


def resolve_method(ref: str, choose: str | None = None) -> tuple[str, type]:
    """``(registry name, class)`` of a plugin file, ``module:Class`` reference or registered name."""
    from benchmark.method import Method

    if ref.endswith(".py") or os.sep in ref or "/" in ref:
        before = {n: METHODS.get(n) for n in METHODS.names()}
        module = load_plugin(ref)
        classes = sorted(
            {
                obj
                for obj in vars(module).values()
                if isinstance(obj, type)
                and issubclass(obj, Method)
                and obj is not Method
                and obj.__module__ == module.__name__
            },
            key=lambda c: c.__qualname__,
        )
        if choose is not None:
            classes = [c for c in classes if choose in (c.__qualname__, getattr(c, "name", None))]
        if not classes:
            raise SubmissionError(
                f"{ref} defines no subclass of benchmark.method.Method" + (f" named {choose!r}" if choose else "")
            )
        if len(classes) > 1:
            raise SubmissionError(
                f"{ref} defines several methods ({', '.join(c.__qualname__ for c in classes)}); "
                "pick one with --method NAME"
            )
        cls = classes[0]
        names = [n for n in METHODS.names() if METHODS.get(n) is cls]
        if names:
            return names[0], cls
        cls._pdbench_unregistered_plugin = True  # worker processes would not know it: run it in this process
        if cls.name in before:
            raise SubmissionError(
                f"{ref}: method name {cls.name!r} is already taken by {METHODS.origin(cls.name)}; "
                "give your class another `name`"
            )
        METHODS.register(cls.name, cls)
        return cls.name, cls
    if ":" in ref:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        qual = ref.partition(":")[2]
        try:
            obj = resolve(ref, "method")
        except RegistryError as exc:
            raise SubmissionError(f"cannot import {ref!r}: {exc}") from exc
        cls = obj
        if not isinstance(cls, type):
            raise SubmissionError(f"{ref} is a {type(cls).__name__}, not a class")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise SubmissionError(f"{ref} has no `name` class attribute")
        if name in METHODS:
            other = METHODS.get(name)
            if other is not cls:
                raise SubmissionError(
                    f"method name {name!r} is already taken by {METHODS.origin(name)}; give {qual} another `name`"
                )
        else:
            METHODS.register(name, cls)
        return name, cls
    try:
        return ref, METHODS.get(ref)
    except RegistryError as exc:
        raise SubmissionError(str(exc)) from exc


def _flat_components(dec: Any, shapes: dict[str, Any]) -> Any:
    return dec.flat(tuple(shapes), shapes)


def check_adapter(cls: type, toy_name: str = CHECK_TOY, seed: int = 0) -> list[Check]:
    """Check ``cls`` as a method adapter on a tiny toy model; each check says what failed and how to fix it."""
    import torch

    from benchmark.decomposition import Decomposition
    from benchmark.method import Budget, Method
    from benchmark.toy import load_toy

    checks: list[Check] = []

    def add(name: str, ok: bool, fix: str = "", warning: bool = False, info: str = "") -> bool:
        checks.append(Check(name, bool(ok), info if ok else fix, warning))
        return bool(ok)

    if not add(
        "is a Method subclass",
        isinstance(cls, type) and issubclass(cls, Method),
        f"{cls!r} must subclass benchmark.method.Method (see docs/submit.md)",
    ):
        return checks
    name, version = getattr(cls, "name", None), getattr(cls, "version", None)
    add(
        "has a valid name",
        isinstance(name, str) and name != "unnamed" and bool(NAME_RE.match(name)),
        f"`name` must be a short identifier (letters, digits, _ . @ -), got {name!r}",
    )
    add(
        "has a version",
        isinstance(version, str) and bool(version.strip()),
        f"`version` must be a non-empty string (bump it when results change), got {version!r}",
    )
    add(
        "cites a paper",
        isinstance(cls.paper, str) and bool(cls.paper.strip()),
        "set `paper` to the paper or URL the method comes from",
        warning=True,
    )
    add(
        "does not see the ground truth",
        not cls.sees_ground_truth,
        "sees_ground_truth is reserved for the labelled oracle baseline",
    )
    add(
        "is not a reference row",
        not cls.reference_row,
        "reference_row marks the built-in baselines (oracle, random, whole, pca); leave it False",
    )
    try:
        method = cls()
        hp = method.hparams(toy_name)
        json.dumps(hp, allow_nan=False)
        add("constructs with no arguments; hyperparameters are JSON", True, info=f"{hp}")
    except Exception as exc:
        add("constructs with no arguments; hyperparameters are JSON", False, f"{type(exc).__name__}: {exc}")
        return checks
    toy = load_toy(toy_name)
    shapes = toy.param_shapes()
    budget = Budget(scale=0.1)

    def run_once() -> tuple[Any, float]:
        target = toy.target()
        torch.manual_seed(seed)  # as the runner does: torch's global RNG is seeded, other sources are not
        t0 = time.perf_counter()
        dec = cls().decompose(target, budget, seed, "cpu")
        return dec, time.perf_counter() - t0

    try:
        dec, seconds = run_once()
    except Exception as exc:
        add(f"decomposes {toy_name}", False, f"decompose() raised {type(exc).__name__}: {exc}")
        return checks
    if not add(
        f"decomposes {toy_name}",
        isinstance(dec, Decomposition),
        f"decompose() must return a benchmark.decomposition.Decomposition, got {type(dec).__name__}",
    ):
        return checks
    try:
        dec.validate(shapes)
        add(
            "components have the parameters' shapes and are finite",
            True,
            info=f"{len(dec)} components in {seconds:.2f}s",
        )
    except Exception as exc:
        add("components have the parameters' shapes and are finite", False, str(exc))
        return checks
    x = toy.sample(64, torch.Generator().manual_seed(0))
    attr = None
    if dec.attributions is not None:
        try:
            attr = dec.attributions(x)
            ok = (
                isinstance(attr, torch.Tensor)
                and tuple(attr.shape) == (64, len(dec))
                and bool(torch.isfinite(attr).all())
            )
            add(
                "attributions are finite, [batch, C]",
                ok,
                f"attributions(inputs) must return a finite tensor of shape (64, {len(dec)}), got "
                f"{tuple(attr.shape) if isinstance(attr, torch.Tensor) else type(attr).__name__}",
            )
        except Exception as exc:
            add("attributions are finite, [batch, C]", False, f"attributions() raised {type(exc).__name__}: {exc}")
    else:
        add("attributions", True, warning=True, info="none given: the activity metrics will read N/A")
    try:
        dec2, _ = run_once()
        a, b = _flat_components(dec, shapes), _flat_components(dec2, shapes)
        same = a.shape == b.shape and torch.equal(a, b)
        if same and attr is not None and dec2.attributions is not None:
            same = torch.equal(attr, dec2.attributions(x))
        add(
            "deterministic for a fixed seed",
            same,
            "two runs with the same seed gave different components or attributions: draw every random number "
            "from a torch.Generator seeded with `seed` (not numpy's or Python's global RNG, nor the clock)",
        )
    except Exception as exc:
        add("deterministic for a fixed seed", False, f"the second run raised {type(exc).__name__}: {exc}")
    return checks


def print_checks(checks: list[Check], stream=None) -> bool:
    """Print the checks; True when none blocks the submission."""
    stream = stream or sys.stderr
    for c in checks:
        mark = "ok  " if c.ok else ("warn" if c.warning else "FAIL")
        print(f"  [{mark}] {c.name}" + (f": {c.detail}" if c.detail else ""), file=stream)
    return all(c.ok or c.warning for c in checks)


def _summary(results_dir: Path, name: str, log: Callable[[str], None]) -> tuple[int, int]:
    from benchmark.results import load_results

    results, _ = load_results(results_dir)
    mine = [r for r in results if r.cell.method == name]
    errors = [r for r in mine if not r.ok]
    for r in errors:
        log(f"  error on {r.cell.toy} seed {r.cell.seed}: {r.error.summary if r.error else '?'}")
    vals = [r.headline_value for r in mine if r.ok]
    vals = [v for v in vals if isinstance(v, int | float) and math.isfinite(v)]
    if vals:
        log(f"  {len(mine)} cells, {len(errors)} failed; mean headline over the others {sum(vals) / len(vals):.3f}")
    return len(mine), len(errors)


def inspect_submission(ref: str, choose: str | None, check_toy: str, timeout_s: float = 1800.0) -> dict[str, Any]:
    """Resolve and check the submitted method in a worker process of its own (its code never runs in this
    one: :func:`benchmark.processes.run_isolated`).

    Returns ``{"name", "ref", "plugin", "checks"}`` (``ref``: a ``module:object`` reference the workers can
    import, or None for a registered name) or ``{"error": ...}``."""
    from benchmark.processes import IsolatedError, run_isolated

    try:
        return run_isolated(_inspect, {"ref": ref, "choose": choose, "check_toy": check_toy}, timeout_s)
    except IsolatedError as exc:
        return {"error": f"the method could not be checked: {exc}"}


def _inspect(req: dict[str, Any]) -> dict[str, Any]:
    """In the isolated worker of :func:`inspect_submission`: resolve and check the method."""
    try:
        name, cls = resolve_method(req["ref"], req["choose"])
        checks = check_adapter(cls, req["check_toy"])
    except (SubmissionError, RegistryError) as exc:
        return {"error": str(exc)}
    module = getattr(cls, "__module__", "")
    # a class its plugin file registers is found by loading the file; a registered name by the registry
    found = METHODS.builtin(name) is cls and (req["ref"] == name or module.startswith("pdbench_plugin_"))
    return {
        "name": name,
        "ref": None if found else f"{module}:{cls.__qualname__}",
        "plugin": str(Path(req["ref"]).resolve()) if req["ref"].endswith(".py") else None,
        "checks": [c.__dict__ for c in checks],
    }


def cmd_submit(args: argparse.Namespace) -> int:
    from benchmark.commands.leaderboard import default_out
    from benchmark.commands.run import check_hparams
    from benchmark.commands.validate import print_report, validate_folder
    from benchmark.options import csv_list
    from benchmark.runner import run_grid, stderr_log
    from benchmark.suites import suite_cells

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    info = inspect_submission(args.method, args.choose, args.check_toy)
    if "error" in info:
        print(f"pdbench: error: {info['error']}", file=sys.stderr)
        return 2
    name = info["name"]
    log(f"checking method {name!r} ({info['ref'] or name}) on {args.check_toy}:")
    if not print_checks([Check(**c) for c in info["checks"]]):
        log("the adapter failed the checks above; nothing was run (docs/submit.md explains each check)")
        return 1
    if args.check_only:
        log("the adapter passes the checks")
        return 0
    if info["ref"] and name not in METHODS:
        if ":" in args.method and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # so that the workers (which inherit sys.path) can import it
        METHODS.register(name, lazy=info["ref"])  # imported by the workers only
    cells, suite = suite_cells(args.suite, csv_list(args.toys), [name], args.seeds)
    plugins = [info["plugin"]] if info["plugin"] else []
    hparams = requested_hparams(args, [name])
    problem = check_hparams(hparams, [name], cells, args.results)
    if problem:
        print(f"pdbench: error: {problem}", file=sys.stderr)
        return 2
    log(f"running {len(cells)} cells of the {suite.name!r} suite into {args.results}")
    try:
        run_grid(
            cells,
            args.results,
            plugins=plugins,
            log=stderr_log,
            executor=args.executor,
            jobs=args.jobs,
            budget=suite.budget_for(name),
            budgets=suite.budgets([name]),
            rerun=args.rerun,
            retry_errors=args.retry_errors,
            hparams=hparams,
        )
    except (RuntimeError, OSError) as exc:
        print(f"pdbench: error: {exc}", file=sys.stderr)
        return 1
    n, n_err = _summary(args.results, name, log)
    report = validate_folder(args.results, methods={name}, check_artefacts=False, plugins=tuple(plugins))
    print_report(report, sys.stderr)
    if not report.ok:
        return 1
    if not args.no_leaderboard:
        from benchmark.results import load_results
        from leaderboard.build import OutputFolderError, render_all, write_all
        from leaderboard.data import BoardError

        results, problems = load_results(args.results)
        try:
            _, files = render_all(results, problems)
            out = args.out or default_out(args.results)
            write_all(out, files, results=args.results)
        except (BoardError, OutputFolderError) as exc:
            print(
                f"pdbench: error: your results are stored, but the leaderboard cannot be regenerated: {exc}",
                file=sys.stderr,
            )
            return 1
        log(f"leaderboard regenerated in {out}/ (LEADERBOARD.md, index.html, leaderboard.csv, latex/, figures/)")
    if n_err:
        log(f"{n_err} of {n} cells of {name!r} failed (see above); fix them, then run again with --retry-errors")
        return 1
    log(
        f"done: {n} cells of {name!r} stored under {args.results}/*/{name}/. To submit, open a pull request with "
        "your adapter and these result files; CI runs `pdbench validate` on them."
    )
    return 0


def add_parser(sub, common) -> None:
    from benchmark.suites import SUITES

    p = sub.add_parser(
        "submit",
        parents=[common],
        help="check a method adapter, run it over a suite and add its results to the leaderboard",
    )
    p.add_argument("method", help="a plugin file (my_method.py), module:Class, or a registered method name")
    p.add_argument("--method", dest="choose", help="which method of a file that defines several")
    p.add_argument("--suite", default="full", choices=sorted(SUITES), help="which cells (default: full)")
    p.add_argument("--toys", help="comma-separated toy models (default: the suite's)")
    p.add_argument("--seeds", type=seeds, help="comma-separated seeds (default: the suite's)")
    p.add_argument(
        "--results",
        type=Path,
        default=Path("leaderboard/results"),
        help="results folder to add to (default: %(default)s)",
    )
    p.add_argument("--out", type=Path, help="leaderboard output folder (default: as for `pdbench leaderboard`)")
    p.add_argument("--check-toy", default=CHECK_TOY, help="toy model for the adapter checks (default: %(default)s)")
    p.add_argument("--check-only", action="store_true", help="only check the adapter; run nothing")
    add_hparams_argument(p)
    add_execution_arguments(p)
    p.add_argument("--no-leaderboard", action="store_true", help="do not regenerate the leaderboard afterwards")
    p.set_defaults(fn=cmd_submit, load_plugins_here=False)  # the adapter is checked in a child process
