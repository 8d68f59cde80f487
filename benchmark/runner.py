"""Running cells: build the toy model, decompose, validate, score, and store one JSON per cell.

A cell that fails (the method raises, returns NaN or wrong shapes, ...) becomes an error row with the
message and traceback; the other cells go on. Cells whose successful result is already stored are
skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import resource
import sys
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from benchmark import __version__
from benchmark.cache import WeightCache
from benchmark.decomposition import Decomposition
from benchmark.method import Budget, Method
from benchmark.registry import METHODS, load_plugin
from benchmark.results import SCHEMA_VERSION, Cell, environment, git_commit, is_done, now, write_result
from benchmark.scoring import HEADLINE, metric_versions, score
from benchmark.toy import ToyModel, load_toy


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def run_cell(cell: Cell, budget: Budget | None = None, device: str = "cpu", cache: WeightCache | None = None,
             hparams: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one cell and return its result record (status 'ok' or 'error'); never raises for method faults."""
    budget = budget or Budget()
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "benchmark_version": __version__, "git_commit": git_commit(),
        "created_at": now(), "cell": cell.to_dict(), "budget": budget.to_dict(), "device": device,
        "env": environment(), "status": "error", "metrics": {}, "metric_versions": {}, "headline": HEADLINE,
        "toy": {"name": cell.toy}, "method": {"name": cell.method}, "cost": {}, "error": None,
    }
    stage = "loading the toy model"
    try:
        toy = load_toy(cell.toy, cache)
        result["toy"] = toy_record(toy)
        stage = "loading the method"
        method_cls = METHODS.get(cell.method)
        method: Method = method_cls(**(hparams or {}))
        result["method"] = {"name": cell.method, "class": f"{method_cls.__module__}:{method_cls.__qualname__}",
                            "version": method_cls.version, "paper": method_cls.paper,
                            "reference_row": method_cls.reference_row,
                            "sees_ground_truth": method_cls.sees_ground_truth,
                            "hparams": method.hparams(cell.toy)}
        stage = "decomposing"
        target = toy.target(with_ground_truth=method_cls.sees_ground_truth)
        torch.manual_seed(cell.seed)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        dec = method.decompose(target, budget, cell.seed, device)
        wall = time.perf_counter() - t0
        if not isinstance(dec, Decomposition):
            raise TypeError(f"decompose() returned {type(dec).__name__}, not a Decomposition")
        peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else _peak_rss_mb())
        result["cost"] = {"wall_time_s": wall, "peak_memory_mb": peak, "steps": dec.record.steps,
                          "n_components": len(dec), "memory_kind": "cuda_max_allocated"
                          if device.startswith("cuda") else "process_max_rss"}
        result["method"]["hparams"] = dec.record.hparams or result["method"]["hparams"]
        stage = "validating the decomposition"
        dec.validate(toy.param_shapes())
        stage = "scoring"
        result["metrics"] = score(toy, dec)
        result["metric_versions"] = metric_versions(list(result["metrics"]))
        result["status"] = "ok"
    except Exception as exc:
        result["error"] = {"stage": stage, "type": type(exc).__name__, "message": str(exc),
                           "traceback": traceback.format_exc()}
    return result


def toy_record(toy: ToyModel) -> dict[str, Any]:
    info = toy.build_info
    assert info is not None
    return {**toy.spec.to_dict(), "weights_sha256": info.weights_sha256, "train_seed": info.train_seed,
            "build": info.extra}


def run_grid(cells: Iterable[Cell], results_dir: Path, budget: Budget | None = None, device: str = "cpu",
             cache: WeightCache | None = None, plugins: Iterable[str] = (), rerun: bool = False,
             log=print) -> list[Path]:
    """Run every cell not already stored; return the paths written."""
    for p in plugins:
        load_plugin(p)
    cells = sorted(set(cells))
    todo = [c for c in cells if rerun or not is_done(results_dir, c)]
    log(f"{len(cells)} cells, {len(cells) - len(todo)} already stored, {len(todo)} to run")
    written, t_start = [], time.perf_counter()
    for i, cell in enumerate(todo, 1):
        res = run_cell(cell, budget, device, cache)
        written.append(write_result(results_dir, res))
        elapsed = time.perf_counter() - t_start
        eta = elapsed / i * (len(todo) - i)
        status = "ok" if res["status"] == "ok" else f"ERROR ({res['error']['type']}: {res['error']['message']})"
        head = res["metrics"].get(HEADLINE)
        head_s = f" {HEADLINE}={head:.3f}" if isinstance(head, float) else ""
        log(f"[{i}/{len(todo)}] {cell.toy} x {cell.method} x seed {cell.seed}: {status}{head_s} "
            f"({res['cost'].get('wall_time_s', 0):.1f}s; elapsed {elapsed:.0f}s, ~{eta:.0f}s left)")
    return written
