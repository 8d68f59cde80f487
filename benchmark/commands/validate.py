"""``pdbench validate RESULTS``: check a results folder and give the verdict CI gives.

Every ok result is scored again from its stored decomposition (:mod:`benchmark.rescore`), in this process,
which imports the engine, the toy models and the built-in metrics only: plugin files named with
``--plugin`` are read by a child process (:mod:`benchmark.catalog`) for their methods' versions.

Errors (the folder is refused, exit 1):
- a file that is not a readable, current-schema result, or that lies at another cell's path;
- a result without a required field (method version and class, toy version and weights SHA-256, budget,
  cost; for an ok row the stored decomposition's SHA-256 and the metric versions);
- an ok result whose stored decomposition is missing, differs from its recorded SHA-256, or re-scores to any
  metric more than 1e-6 away from the stored value; a metric outside its bounds; an unknown metric;
- a method that is neither built in nor registered by a ``--plugin`` file, or whose recorded reference-row
  or ground-truth flags differ from the installed class's;
- a toy model whose recorded weights SHA-256 differs from the weights built here (from the checked cache),
  or whose spec version changed since the result was written;
- a metric whose version changed, or a headline other than this pdbench's;
- a method whose recorded version differs from the installed one;
- one toy model or one method recorded with two different builds or versions in the same folder;
- with ``--min-seeds N``: a (toy model, method) with fewer than N runs (toy instances x method seeds);
- where the folder is ``<board>/results`` and ``<board>/LEADERBOARD.md`` exists: leaderboard artefacts that are
  out of date with the results (regenerate with ``pdbench leaderboard``).
Warnings (reported, verdict unchanged): another benchmark version, stray files, methods that do not cover
every toy model of the folder.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark import __version__, heldout
from benchmark.registry import METRICS, TOY_MODELS, RegistryError

if TYPE_CHECKING:
    from benchmark.results import ResultRecord


@dataclass
class Report:
    root: Path
    n_results: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.n_results > 0

    def verdict(self) -> str:
        if self.n_results == 0 and not self.errors:
            return f"INVALID: no result files in {self.root}"
        if self.errors:
            return f"INVALID: {len(self.errors)} error(s) in {self.n_results} result(s) under {self.root}"
        return f"VALID: {self.n_results} result(s) under {self.root}" + (
            f", {len(self.warnings)} warning(s)" if self.warnings else ""
        )


REQUIRED_FIELDS = {
    "method": ("version", "class_ref", "reference_row", "sees_ground_truth"),
    "toy": ("version", "weights_sha256"),
}
REQUIRED_OK = ("budget", "cost", "metric_versions", "decomposition")


def _required_checks(r: ResultRecord, report: Report) -> bool:
    """Errors for every required field an ok result lacks; True when it has them all. (An error row may come
    from a method or toy model that never loaded: it needs only its cell and error.)"""
    missing: list[str] = []
    if r.ok:
        for part, keys in REQUIRED_FIELDS.items():
            rec = getattr(r, part)
            missing += [f"{part}.{k.replace('class_ref', 'class')}" for k in keys if getattr(rec, k) is None]
        missing += [k for k in REQUIRED_OK if getattr(r, k) in (None, {})]
    if missing:
        report.errors.append(f"{r.where}: missing required field(s) {missing}")
    return not missing


def _toy_checks(name: str, rs: list[ResultRecord], report: Report, cache: Any) -> None:
    from benchmark.toy import load_toy

    records = [r for r in rs if r.toy.weights_sha256 is not None]
    if not records:
        return
    shas = {(r.toy.version, str(r.toy.weights_sha256)) for r in records}
    if len(shas) > 1:
        report.errors.append(
            f"toy model {name!r}: results record {len(shas)} different builds "
            f"{sorted((str(v), s[:12]) for v, s in shas)}; re-run the stale cells"
        )
    if name not in TOY_MODELS:
        report.errors.append(f"toy model {name!r} is not registered here, so its weights cannot be checked")
        return
    try:
        toy = load_toy(name, cache)
    except Exception as exc:
        report.errors.append(
            f"toy model {name!r} cannot be built here to check its SHA-256: {type(exc).__name__}: {exc}"
        )
        return
    assert toy.build_info is not None
    sha, version = toy.build_info.weights_sha256, toy.spec.version
    for r in records:
        if str(r.toy.version) != version:
            report.errors.append(
                f"{r.where}: toy model {name!r} version {r.toy.version} but the installed one is version "
                f"{version}; re-run the cell"
            )
        elif r.toy.weights_sha256 != sha:
            report.errors.append(
                f"{r.where}: toy model {name!r} weights SHA-256 {str(r.toy.weights_sha256)[:16]}... differs from "
                f"the weights built here ({sha[:16]}...); the result was computed on other weights: re-run the cell"
            )


def _method_checks(name: str, rs: list[ResultRecord], report: Report, catalog: dict[str, dict[str, Any]]) -> None:
    versions = {r.method.version for r in rs if r.method.version is not None}
    if len(versions) > 1:
        report.errors.append(f"method {name!r}: results record versions {sorted(versions)}; re-run the stale cells")
    installed = catalog.get(name)
    if installed is None:
        report.errors.append(
            f"method {name!r} is neither built in nor registered by a --plugin file, so its version cannot be "
            "checked (pass its plugin with --plugin)"
        )
        return
    for r in rs:
        m = r.method
        for flag in ("reference_row", "sees_ground_truth"):
            value = getattr(m, flag)
            if value is not None and bool(value) != bool(installed[flag]):
                report.errors.append(
                    f"{r.where}: method {name!r} records {flag}={value!r}, the installed method has {installed[flag]!r}"
                )
        if m.class_ref not in (None, installed["class"]):
            report.errors.append(
                f"{r.where}: method {name!r} records class {m.class_ref!r}, the installed one is {installed['class']!r}"
            )
    stale = sorted(versions - {str(installed["version"])})
    if stale:
        report.errors.append(
            f"method {name!r}: results were made with version(s) {stale}, the installed one is "
            f"{installed['version']}; re-run its cells (pdbench run --rerun --methods {name})"
        )


def _result_checks(
    r: ResultRecord,
    report: Report,
    current_metrics: dict[str, str],
    headline: str,
    stale_metrics: dict[tuple[str, str], list[str]],
) -> None:
    where = r.where
    if r.headline != headline:
        report.errors.append(f"{where}: headline {r.headline!r}, this pdbench's is {headline!r}")
    if r.ok:
        if r.headline_value is None:
            report.errors.append(f"{where}: status ok but the headline metric {r.headline!r} is missing")
        for k, v in r.metric_versions.items():
            if k in current_metrics and str(v) != current_metrics[k]:
                stale_metrics[(k, str(v))].append(where)
        missing_versions = sorted(set(r.metrics) - set(r.metric_versions))
        if missing_versions:
            report.errors.append(f"{where}: metric(s) {missing_versions} have no recorded version")
    if r.benchmark_version != __version__:
        report.warnings.append(f"{where}: written by pdbench {r.benchmark_version}, this is {__version__}")


def validate_folder(
    root: Path,
    cache: Any = None,
    min_seeds: int | None = None,
    methods: set[str] | None = None,
    check_artefacts: bool = True,
    plugins: tuple[str, ...] = (),
    max_rescore_mb: float | None = None,
) -> Report:
    """Check every result under ``root`` (or only those of ``methods``); see the module docstring."""
    from benchmark.catalog import builtin_methods, method_catalog
    from benchmark.results import ResultError, read_result
    from benchmark.scoring import HEADLINE

    root = Path(root)
    report = Report(root)
    if not root.is_dir():
        report.errors.append(f"{root} is not a folder")
        return report
    results: list[ResultRecord] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if path.name.startswith("seed") and path.suffix == ".safetensors":
            if not path.with_suffix(".json").exists():
                report.warnings.append(f"{path}: a stored decomposition without its result (from an interrupted run)")
            continue
        if not (path.name.startswith("seed") and path.suffix == ".json"):
            if path.name.endswith(".tmp"):
                report.errors.append(f"{path}: a temporary file left by an interrupted writer; delete it")
            elif rel == Path(heldout.RECORD):
                continue  # the held-out seed's hash (benchmark.heldout)
            elif not path.name.startswith("."):
                report.warnings.append(f"{path}: not a result file (expected <toy>/<method>/seed<k>.json)")
            continue
        if methods is not None and len(rel.parts) == 3 and rel.parts[1] not in methods:
            continue
        try:
            r = read_result(path, root)
        except ResultError as exc:
            report.errors.append(str(exc))
            continue
        results.append(r)
    report.n_results = len(results)
    current_metrics = {n: str(m.version) for n, m in METRICS.items()}
    by_toy: dict[str, list[ResultRecord]] = defaultdict(list)
    by_method: dict[str, list[ResultRecord]] = defaultdict(list)
    stale_metrics: dict[tuple[str, str], list[str]] = defaultdict(list)
    try:
        catalog = method_catalog(plugins)
    except RegistryError as exc:
        report.errors.append(str(exc))
        catalog = builtin_methods()
    for r in results:
        _required_checks(r, report)
        _result_checks(r, report, current_metrics, HEADLINE, stale_metrics)
        by_toy[r.cell.toy].append(r)
        by_method[r.cell.method].append(r)
    for (k, v), paths in sorted(stale_metrics.items()):
        report.errors.append(
            f"metric {k!r}: {len(paths)} result(s) scored with version {v}, the installed one is "
            f"{current_metrics[k]} (e.g. {paths[0]}); re-score them with `pdbench rescore {root}`"
        )
    for name, rs in sorted(by_toy.items()):
        _toy_checks(name, rs, report, cache)
    for name, rs in sorted(by_method.items()):
        _method_checks(name, rs, report, catalog)
        covered = {r.cell.toy for r in rs}
        missing = sorted(set(by_toy) - covered)
        if missing:
            report.warnings.append(f"method {name!r} has no results on {missing}: it will be marked partial")
        if min_seeds is not None:  # runs per leaderboard cell: (toy instance, method seed) pairs per toy model
            runs: dict[str, set[tuple[int, int]]] = defaultdict(set)
            for r in rs:
                runs[r.family].add(r.replicate)
            few = sorted(t for t, s in runs.items() if len(s) < min_seeds)
            if few:
                report.errors.append(
                    f"method {name!r} has fewer than {min_seeds} runs (toy instances x seeds) on {few}"
                )
    _rescore_checks(root, cache, methods, report, max_rescore_mb)
    board_dir = root.parent
    if (
        check_artefacts
        and methods is None
        and root.name == "results"
        and (board_dir / "LEADERBOARD.md").exists()
        and results
        and not report.errors
    ):
        _artefact_check(root, board_dir, report)
    return report


def _rescore_checks(
    root: Path, cache: Any, methods: set[str] | None, report: Report, max_mb: float | None = None
) -> None:
    """Every ok result scored again from its stored decomposition must give its stored metrics. With
    ``max_mb``, larger stored decompositions are only checked against their SHA-256 (a quicker verdict)."""
    from benchmark.rescore import compare, iter_rescored, stored_decomposition

    def small(r: ResultRecord) -> bool:
        return max_mb is None or r.decomposition is None or r.decomposition.bytes <= max_mb * 2**20

    def wanted(r: ResultRecord) -> bool:
        return methods is None or r.cell.method in methods

    for item in iter_rescored(root, cache, lambda r: wanted(r) and small(r)):
        problems = item.problems if item.metrics is None else compare(item.result.metrics, item.metrics)
        for p in problems:
            report.errors.append(f"{item.path}: {p}")
    if max_mb is None:
        return
    from benchmark.results import load_results

    large = [r for r in load_results(root)[0] if r.ok and wanted(r) and not small(r)]
    for r in large:
        try:
            stored_decomposition(root, r, r.where)
        except Exception as exc:  # noqa: BLE001 - reported
            report.errors.append(str(exc))
    if large:
        report.warnings.append(
            f"{len(large)} result(s) with stored decompositions over {max_mb:g} MB were checked against their "
            "SHA-256 but not re-scored (--max-rescore-mb); run without it for the full verdict"
        )


def _artefact_check(root: Path, board_dir: Path, report: Report) -> None:
    from benchmark.results import load_results
    from leaderboard.build import render_all, stale_files
    from leaderboard.data import BoardError

    results, problems = load_results(root)
    try:
        _, files = render_all(results, problems)
    except BoardError as exc:
        report.errors.append(f"the results cannot be put on one leaderboard: {exc}")
        return
    stale = stale_files(board_dir, files)
    if stale:
        report.errors.append(
            f"{len(stale)} leaderboard artefact(s) in {board_dir} are out of date with the results "
            f"({', '.join(stale[:5])}{', ...' if len(stale) > 5 else ''}); regenerate them with "
            f"`pdbench leaderboard --results {root}`"
        )


def print_report(report: Report, stream=None) -> None:
    stream = stream or sys.stdout
    for e in report.errors:
        print(f"error: {e}", file=stream)
    for w in report.warnings:
        print(f"warning: {w}", file=stream)
    print(report.verdict(), file=stream)


def cmd_validate(args: argparse.Namespace) -> int:
    plugins = tuple(args.plugin + args.verb_plugin)
    report = validate_folder(
        args.results,
        min_seeds=args.min_seeds,
        check_artefacts=not args.no_artefacts,
        plugins=plugins,
        max_rescore_mb=args.max_rescore_mb,
    )
    print_report(report)
    return 0 if report.ok else 1


def add_parser(sub, common) -> None:
    p = sub.add_parser(
        "validate",
        parents=[common],
        help="check a results folder and re-score every cell from its stored decomposition: the verdict CI gives",
    )
    p.set_defaults(load_plugins_here=False)  # plugins are read by a child process, never imported here
    p.add_argument(
        "results",
        type=Path,
        nargs="?",
        default=Path("leaderboard/results"),
        help="results folder (default: %(default)s)",
    )
    p.add_argument("--min-seeds", type=int, help="require at least this many seeds per (toy model, method)")
    p.add_argument(
        "--max-rescore-mb",
        type=float,
        metavar="MB",
        help="re-score only stored decompositions up to this size; check the larger ones' SHA-256 only "
        "(a quicker verdict; default: re-score every cell)",
    )
    p.add_argument(
        "--no-artefacts",
        action="store_true",
        help="do not check that the leaderboard artefacts beside a 'results' folder are up to date",
    )
    p.set_defaults(fn=cmd_validate)
