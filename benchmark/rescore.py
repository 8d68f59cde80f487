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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.cache import WeightCache
from benchmark.cell import metric_shift, score_stored
from benchmark.executors import cpu_count
from benchmark.files import atomic_write_bytes
from benchmark.processes import ParentEnvironment, init_pool_worker, worker_context
from benchmark.registry import METRICS
from benchmark.results import (
    SCHEMA_VERSION,
    DecompositionRecord,
    ResultError,
    ResultRecord,
    read_result,
    write_result,
)
from benchmark.scoring import metric_versions
from benchmark.stored import StoredDecomposition, StoredDecompositionError, sha256
from benchmark.toy import load_toy

TOLERANCE = 1e-6  # largest difference between a stored and a recomputed metric that validate accepts ...
RELATIVE_TOLERANCE = 1e-9  # ... plus this share of the value (a ratio metric reaches 1e6: float64 rounding
# of its denominator, which differs from one CPU's kernels to another's, is then above 1e-6)


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
    """Every metric whose stored value differs from the recomputed one (beyond :data:`TOLERANCE` plus
    :data:`RELATIVE_TOLERANCE` of it), is
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
            elif abs(a - b) > TOLERANCE + RELATIVE_TOLERANCE * abs(b):
                problems.append(f"metric {name!r} is {a!r}, recomputed from the stored decomposition {b!r}")
            elif not METRICS.get(name).in_bounds(a):
                problems.append(f"metric {name!r} = {a!r} lies outside its bounds {METRICS.get(name).bounds}")
    return problems


CHUNK = 6  # results scored by one task of the process pool (one toy model each)


def iter_rescored(
    root: Path,
    cache: WeightCache | None = None,
    only: Callable[[ResultRecord], bool] | None = None,
    jobs: int | None = None,
) -> Iterator[Rescored]:
    """Every readable ok result under ``root`` scored again from its stored decomposition. Results of one toy
    model go in chunks of :data:`CHUNK` to ``jobs`` fresh processes (default: one per core), each importing
    the engine, the toy models and the built-in metrics only; with ``jobs=1`` this process scores them."""
    root = Path(root)
    by_toy: dict[str, list[tuple[Path, ResultRecord]]] = {}
    for path in sorted(root.rglob("seed*.json")):
        try:
            r = read_result(path, root)
        except ResultError:
            continue  # the caller reports unreadable files
        if r.ok and (only is None or only(r)):
            by_toy.setdefault(r.cell.toy, []).append((path, r))
    chunks = [(toy, rows[i : i + CHUNK]) for toy, rows in sorted(by_toy.items()) for i in range(0, len(rows), CHUNK)]
    cache_root = str(cache.root) if cache is not None else None
    jobs = min(jobs or cpu_count(), len(chunks))
    if jobs <= 1:
        for toy, rows in chunks:
            yield from _merge(rows, _score_chunk(str(root), toy, [str(p) for p, _ in rows], cache_root))
        return
    ctx = worker_context()
    life, lifeline = ctx.Pipe(duplex=False)  # never written: the workers end when this process does
    try:
        with ProcessPoolExecutor(
            max_workers=jobs, mp_context=ctx, initializer=init_pool_worker, initargs=(ParentEnvironment.capture(), life)
        ) as pool:
            futures = [
                pool.submit(_score_chunk, str(root), toy, [str(p) for p, _ in rows], cache_root) for toy, rows in chunks
            ]
            for (_, rows), future in zip(chunks, futures, strict=True):
                yield from _merge(rows, future.result())
    finally:
        life.close()
        lifeline.close()


def _merge(rows: list[tuple[Path, ResultRecord]], scored: list[tuple[dict | None, list[str]]]) -> Iterator[Rescored]:
    for (path, r), (metrics, problems) in zip(rows, scored, strict=True):
        yield Rescored(path, r, metrics, problems)


def _score_chunk(
    root: str, toy_name: str, paths: list[str], cache_root: str | None
) -> list[tuple[dict | None, list[str]]]:
    """Score the stored decompositions of some results of one toy model: ``(metrics or None, problems)`` each."""
    try:
        toy = load_toy(toy_name, WeightCache(cache_root) if cache_root else None)
    except Exception as exc:  # noqa: BLE001 - reported per result
        return [(None, [f"toy model {toy_name!r} cannot be built here ({type(exc).__name__}: {exc})"])] * len(paths)
    built = toy.weights_sha256()
    out: list[tuple[dict | None, list[str]]] = []
    for path in paths:
        r = read_result(Path(path), Path(root))
        if (recorded := str(r.toy.weights_sha256)) != built:
            out.append(
                (
                    None,
                    [
                        f"toy model {toy_name!r}: the result records weights {recorded[:16]}..., the weights "
                        f"built here are {built[:16]}...; re-run the cell"
                    ],
                )
            )
            continue
        try:
            out.append((score_stored(toy, stored_decomposition(Path(root), r, path)), []))
        except Exception as exc:  # noqa: BLE001 - a decomposition that cannot be scored is a finding
            out.append((None, [f"cannot be scored again: {type(exc).__name__}: {exc}"]))
    return out


def _max_diff(a: dict[str, Any], b: dict[str, float | None]) -> float:
    diffs = [abs(a[k] - v) for k, v in b.items() if v is not None and isinstance(a.get(k), int | float)]
    return max(diffs, default=math.inf)


@dataclass
class RescoreSummary:
    rescored: int = 0
    changed: int = 0
    compacted: int = 0
    upgraded: int = 0  # results rewritten at the current schema version
    max_diff: float = 0.0  # largest change of a stored metric, over the changed results
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def rescore_folder(
    root: Path, cache: WeightCache | None = None, log: Callable[[str], None] = print, compact: bool = False
) -> RescoreSummary:
    """Recompute and rewrite the metrics of every ok result under ``root`` from its stored decomposition
    (the caller holds the folder's lock). With ``compact``, a float32 decomposition larger than
    :data:`benchmark.stored.COMPACT_ABOVE_BYTES` is rewritten as float16, as the runner now stores it, with
    the largest metric change this causes recorded in its result."""
    t0 = time.perf_counter()
    summary = RescoreSummary()
    for item in iter_rescored(root, cache):
        if item.metrics is None:
            summary.problems.extend(f"{item.path}: {p}" for p in item.problems)
            continue
        r = item.result
        metrics = item.metrics
        if compact and r.decomposition is not None:
            stored = stored_decomposition(root, r, str(item.path))
            small = stored.compacted()
            if small is not stored:
                data = small.to_bytes()
                toy = load_toy(r.cell.toy, cache)
                metrics = score_stored(toy, StoredDecomposition.from_bytes(data))
                atomic_write_bytes(r.cell.decomposition_path(root), data)
                r.decomposition = DecompositionRecord(
                    sha256(data), len(data), "safetensors", small.precision, metric_shift(item.metrics, metrics)
                )
                summary.compacted += 1
        if compare(r.metrics, item.metrics):
            summary.changed += 1  # a stored metric the stored decomposition does not reproduce (a metric changed)
            summary.max_diff = max(summary.max_diff, _max_diff(r.metrics, item.metrics))
        summary.upgraded += r.schema_version != SCHEMA_VERSION
        r.metrics = metrics
        r.metric_versions = metric_versions(list(metrics))
        r.schema_version = SCHEMA_VERSION
        write_result(root, r)
        summary.rescored += 1
    summary.seconds = time.perf_counter() - t0
    return summary
