"""Scores recomputed from stored decompositions, never from a method's code.

:func:`rescore_folder` reads each ok result's stored decomposition (checked against the SHA-256 its result
records), scores it with the installed built-in metrics and either rewrites the result (``pdbench rescore``:
after a metric changes, no method runs again) or reports every metric that differs from the stored one by
more than :data:`TOLERANCE` (``pdbench validate``). This process imports the engine, the toy models and the
built-in metrics only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.cache import WeightCache
from benchmark.cell import score_stored
from benchmark.registry import METRICS
from benchmark.results import SCHEMA_VERSION, Cell, ResultError, ResultRecord, read_result, write_result
from benchmark.scoring import metric_versions
from benchmark.stored import StoredDecomposition, StoredDecompositionError, sha256
from benchmark.toy import ToyModel, load_toy

TOLERANCE = 1e-6  # largest difference between a stored and a recomputed metric that validate accepts


@dataclass
class Rescored:
    """One ok result scored again: the result as stored, the recomputed metrics, and what went wrong."""

    path: Path
    result: ResultRecord
    metrics: dict[str, float | None] | None = None
    problems: list[str] = field(default_factory=list)


def stored_decomposition(root: Path, result: ResultRecord, where: str) -> StoredDecomposition:
    """The decomposition stored for ``result``'s cell, checked against its recorded SHA-256."""
    record = result.decomposition
    if record is None:
        raise StoredDecompositionError(f"{where}: the result records no stored decomposition (re-run the cell)")
    path = result.cell.decomposition_path(root)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoredDecompositionError(f"{where}: its stored decomposition {path} cannot be read ({exc})") from None
    if sha256(data) != record.sha256:
        raise StoredDecompositionError(
            f"{where}: the stored decomposition {path.name} does not match the SHA-256 its result records"
        )
    return StoredDecomposition.from_bytes(data, str(path))


def compare(stored: dict[str, Any], recomputed: dict[str, float | None]) -> list[str]:
    """Every metric whose stored value differs from the recomputed one (beyond :data:`TOLERANCE`), is
    missing, is extra, or lies outside the metric's bounds."""
    problems = []
    for name in sorted(set(stored) | set(recomputed)):
        if name not in recomputed:
            problems.append(f"metric {name!r} is not a built-in metric of this pdbench")
            continue
        if name not in stored:
            problems.append(f"metric {name!r} is missing")
            continue
        a, b = stored[name], recomputed[name]
        if (a is None) != (b is None):
            problems.append(f"metric {name!r} is {a!r}, recomputed from the stored decomposition {b!r}")
        elif a is not None and b is not None:
            if not isinstance(a, int | float) or isinstance(a, bool) or not math.isfinite(a):
                problems.append(f"metric {name!r} is {a!r}, not a finite number")
            elif abs(a - b) > TOLERANCE:
                problems.append(f"metric {name!r} is {a!r}, recomputed from the stored decomposition {b!r}")
            elif not METRICS.get(name).in_bounds(a):
                problems.append(f"metric {name!r} = {a!r} lies outside its bounds {METRICS.get(name).bounds}")
    return problems


def iter_rescored(
    root: Path, cache: WeightCache | None = None, only: Callable[[Cell], bool] | None = None
) -> Iterator[Rescored]:
    """Every readable ok result under ``root`` scored again from its stored decomposition, grouped by toy
    model so each toy is built once."""
    root = Path(root)
    by_toy: dict[str, list[tuple[Path, ResultRecord]]] = {}
    for path in sorted(root.rglob("seed*.json")):
        try:
            r = read_result(path, root)
        except ResultError:
            continue  # the caller reports unreadable files
        if r.ok and (only is None or only(r.cell)):
            by_toy.setdefault(r.cell.toy, []).append((path, r))
    for toy_name, rows in sorted(by_toy.items()):
        toy: ToyModel | None = None
        toy_error = None
        try:
            toy = load_toy(toy_name, cache)
        except Exception as exc:  # noqa: BLE001 - reported per result
            toy_error = f"toy model {toy_name!r} cannot be built here ({type(exc).__name__}: {exc})"
        for path, r in rows:
            item = Rescored(path, r)
            if toy is None:
                item.problems.append(toy_error or "toy model missing")
            elif (recorded := str(r.toy.weights_sha256)) != (built := toy.weights_sha256()):
                item.problems.append(
                    f"toy model {toy_name!r}: the result records weights {recorded[:16]}..., the weights built "
                    f"here are {built[:16]}...; re-run the cell"
                )
            else:
                try:
                    item.metrics = score_stored(toy, stored_decomposition(root, r, str(path)))
                except Exception as exc:  # noqa: BLE001 - a decomposition that cannot be scored is a finding
                    item.problems.append(f"cannot be scored again: {type(exc).__name__}: {exc}")
            yield item


@dataclass
class RescoreSummary:
    rescored: int = 0
    changed: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def rescore_folder(root: Path, cache: WeightCache | None = None, log: Callable[[str], None] = print) -> RescoreSummary:
    """Recompute and rewrite the metrics of every ok result under ``root`` from its stored decomposition
    (the caller holds the folder's lock)."""
    t0 = time.perf_counter()
    summary = RescoreSummary()
    for item in iter_rescored(root, cache):
        if item.metrics is None:
            summary.problems.extend(f"{item.path}: {p}" for p in item.problems)
            continue
        r = item.result
        if compare(r.metrics, item.metrics) or r.schema_version != SCHEMA_VERSION:
            summary.changed += 1
        r.metrics = item.metrics
        r.metric_versions = metric_versions(list(item.metrics))
        r.schema_version = SCHEMA_VERSION
        write_result(root, r)
        summary.rescored += 1
    summary.seconds = time.perf_counter() - t0
    return summary
