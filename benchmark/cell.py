"""One cell (toy model x method x seed): the method's side and the scorer's side.

- :func:`run_method` runs in a worker process (or, with the serial executor, in the caller): it builds the
  toy model, gives the method a :class:`~benchmark.toy.Target` (never the ground truth, except to the
  built-in oracle), checks the returned decomposition and reduces it to data
  (:class:`~benchmark.stored.StoredDecomposition`, serialised to bytes). It never scores.
- :func:`score_result` runs in the scoring process, which never imports method code: it reads the stored
  bytes and computes every built-in metric from them, so the scores can be recomputed from the file alone
  (``pdbench rescore``, ``pdbench validate``).

Neither raises for a fault of the method or toy model: the cell becomes an error row with the stage,
message and traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmark import __version__
from benchmark.cache import WeightCache
from benchmark.convergence import converged
from benchmark.decomposition import Decomposition, DecompositionError, LowRank
from benchmark.method import Budget, Method
from benchmark.registry import METHODS
from benchmark.results import SCHEMA_VERSION, Cell, environment, git_commit, now
from benchmark.scoring import HEADLINE, eval_inputs, metric_versions, score
from benchmark.stored import StoredDecomposition, StoredDecompositionError, sha256
from benchmark.toy import ToyModel, load_toy

PAYLOAD = "_decomposition"  # key of the stored decomposition's bytes in a result on its way to the scorer


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB: VmHWM (resettable per cell) where Linux has it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def reset_peak_rss() -> bool:
    """Reset the peak-RSS mark so the next cell's peak is its own (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def jsonable(obj: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of ``obj`` (a method's hyperparameters may hold anything): non-finite floats and
    unknown objects become strings, tensors their repr."""
    if depth > 20:
        return repr(obj)[:200]
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v, depth + 1) for v in obj]
    return repr(obj)[:200]


def base_record(cell: Cell, budget: Budget, device: str) -> dict[str, Any]:
    """The fields every result carries, set up as an error row until the cell succeeds."""
    return {
        "schema_version": SCHEMA_VERSION,
        "benchmark_version": __version__,
        "git_commit": git_commit(),
        "created_at": now(),
        "cell": cell.to_dict(),
        "budget": budget.to_dict(),
        "device": device,
        "env": environment(),
        "status": "error",
        "metrics": {},
        "metric_versions": {},
        "headline": HEADLINE,
        "toy": {"name": cell.toy},
        "method": {"name": cell.method},
        "cost": {},
        "error": None,
    }


def error_result(
    cell: Cell,
    budget: Budget | None,
    device: str,
    stage: str,
    kind: str,
    message: str,
    tb: str = "",
    cost: dict[str, Any] | None = None,
    cache_root: str | None = None,
) -> dict[str, Any]:
    """An error row for a cell that failed outside ``run_cell`` (time limit, memory guard, dead worker)."""
    result = base_record(cell, budget or Budget(), device)
    result["toy"], result["method"] = describe(cell, cache_root)
    result["error"] = {"stage": stage, "type": kind, "message": message, "traceback": tb}
    result["cost"] = dict(cost or {})
    return result


def method_record(name: str, method_cls: type) -> dict[str, Any]:
    """What a result records of its method. Only a built-in class may be a reference row or see the ground
    truth (:func:`trusted_builtin`); a plugin's record names its file and the SHA-256 of its source."""
    trusted = trusted_builtin(name, method_cls)
    record = {
        "name": name,
        "class": f"{method_cls.__module__}:{method_cls.__qualname__}",
        "version": str(getattr(method_cls, "version", "?")),
        "paper": str(getattr(method_cls, "paper", "")),
        "reference_row": trusted and bool(getattr(method_cls, "reference_row", False)),
        "sees_ground_truth": trusted and bool(getattr(method_cls, "sees_ground_truth", False)),
    }
    source = plugin_source(method_cls)
    if source is not None:
        record["plugin"] = source
    return record


def plugin_source(obj: Any) -> dict[str, str] | None:
    """``{"file": name, "sha256": ...}`` of the plugin file that defined ``obj``, or None for an installed module."""
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    if module is None or not module.__name__.startswith("pdbench_plugin_") or not path:
        return None
    try:
        return {"file": Path(path).name, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
    except OSError:
        return None


def describe(cell: Cell, cache_root: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Best-effort toy and method records for an error row made outside the cell. Nothing is built: the toy
    record is filled only where the toy's weights are shipped or in the cache (so it names the same build as the ok
    rows); otherwise it carries just the name."""
    from benchmark.registry import TOY_MODELS

    toy: dict[str, Any] = {"name": cell.toy}
    method: dict[str, Any] = {"name": cell.method}
    try:
        model = TOY_MODELS.get(cell.toy)()
        meta = model.stored_meta(WeightCache(cache_root))
        if meta is not None:
            toy = {
                **model.spec.to_dict(),
                "track": model.track,
                "name": cell.toy,
                "weights_sha256": str(meta["weights_sha256"]),
                "train_seed": int(meta["train_seed"]),
            }
    except Exception:
        pass
    try:
        cls = METHODS.builtin(cell.method)  # never imports method code from a plugin or an entry point
        if cls is not None:
            method = method_record(cell.method, cls)
    except Exception:
        pass
    return toy, method


def check_devices(dec: Decomposition, device: str) -> None:
    """Every component tensor must be on the CPU or on the run's device (``--device``)."""
    allowed = {"cpu", torch.device(device).type}
    for i, comp in enumerate(dec.components):
        if not isinstance(comp, dict):
            continue  # validate() reports it
        for name, v in comp.items():
            tensors = (v.left, v.right) if isinstance(v, LowRank) else (v,)
            for t in tensors:
                if isinstance(t, torch.Tensor) and t.device.type not in allowed:
                    raise DecompositionError(
                        f"component {i}[{name!r}] is on device {t.device}, but this run "
                        f"uses --device {device}; return tensors on {device} or the CPU"
                    )


def toy_record(toy: ToyModel) -> dict[str, Any]:
    info = toy.build_info
    assert info is not None
    return {
        **toy.spec.to_dict(),
        "track": toy.track,
        "weights_sha256": info.weights_sha256,
        "train_seed": info.train_seed,
        "build": jsonable(info.extra),
    }


def trusted_builtin(name: str, method_cls: type) -> bool:
    """True when ``method_cls`` is the class the built-in ``methods`` package registers as ``name``.

    Only such a class may see the ground truth or be shown as a reference row: a plugin that sets
    ``sees_ground_truth = True`` gets neither."""
    module = getattr(method_cls, "__module__", "") or ""
    if not module.startswith("methods.") or METHODS.origin(name) != f"{module}:{method_cls.__qualname__}":
        return False
    try:
        mod = importlib.import_module(module)
    except Exception:
        return False
    root = Path(importlib.import_module("methods").__file__ or "").parent.resolve()
    here = Path(getattr(mod, "__file__", "") or "").resolve()
    return root in here.parents and getattr(mod, method_cls.__qualname__, None) is method_cls


def run_method(
    cell: Cell,
    budget: Budget | None = None,
    device: str = "cpu",
    cache: WeightCache | None = None,
    hparams: dict[str, Any] | None = None,
    memory_limit_mb: float | None = None,
) -> dict[str, Any]:
    """Run the method of one cell; an 'ok' result carries the stored decomposition's bytes under
    :data:`PAYLOAD` and no metrics yet (:func:`score_result` adds them)."""
    return run_methods([cell], budget, device, cache, hparams, memory_limit_mb)[0]


def run_methods(
    cells: Sequence[Cell],
    budget: Budget | None = None,
    device: str = "cpu",
    cache: WeightCache | None = None,
    hparams: dict[str, Any] | None = None,
    memory_limit_mb: float | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_method` for cells of one (toy model, method) that differ only in seed, trained together by
    :meth:`~benchmark.method.Method.decompose_seeds` where there are several. Each cell's cost is its share of
    the group's (``cost.trained_with`` lists the group's seeds, "0,1,2"); one cell's failure is its own error row."""
    budget = budget or Budget()
    first = cells[0]
    if any((c.toy, c.method) != (first.toy, first.method) for c in cells) or len({c.seed for c in cells}) < len(cells):
        raise ValueError(f"cells trained together must share a toy model and a method, with distinct seeds: {cells}")
    results = [base_record(c, budget, device) for c in cells]
    stage = "loading the toy model"
    t0 = time.perf_counter()
    n = len(cells)
    try:
        toy = load_toy(first.toy, cache)
        toy_rec = {**toy_record(toy), "name": first.toy}  # "name@k" for an instance (spec: family, seed)
        for r in results:
            r["toy"] = dict(toy_rec)
        stage = "loading the method"
        method_cls = METHODS.get(first.method)
        if not (isinstance(method_cls, type) and issubclass(method_cls, Method)):
            raise TypeError(f"method {first.method!r} is {method_cls!r}, not a subclass of benchmark.method.Method")
        method: Method = method_cls(**(hparams or {}))
        method_rec = {**method_record(first.method, method_cls), "hparams": jsonable(method.hparams(first.toy))}
        if hparams:
            method_rec["overrides"] = jsonable(hparams)
        for r in results:
            r["method"] = dict(method_rec)  # each result's own: a cell records its run's resolved hparams
        stage = "decomposing"
        sees = bool(results[0]["method"]["sees_ground_truth"])
        target = toy.target(with_ground_truth=sees)
        inputs = eval_inputs(toy)
        if not sees:
            toy.drop_ground_truth()
        torch.manual_seed(first.seed)
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
        c0 = time.process_time()
        try:
            if n == 1:
                decs: list[Any] = [method.decompose(target, budget, first.seed, device)]
            else:
                decs = list(method.decompose_seeds(target, budget, [c.seed for c in cells], device))
        finally:  # a method's global torch settings must not leak into scoring or the next cell
            torch.set_default_dtype(dtype)
            torch.set_grad_enabled(grad)
        wall, cpu = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
        if len(decs) != n:
            raise TypeError(f"decompose_seeds() returned {len(decs)} results for {n} seeds")
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb()
    except (Exception, SystemExit) as exc:
        for r in results:
            _fail(r, stage, exc, memory_limit_mb)
            r["cost"].setdefault("wall_time_s", (time.perf_counter() - t0) / n)
        return results
    for r, dec in zip(results, decs, strict=True):
        _finish_cell(r, dec, toy, inputs, device, memory_limit_mb, wall, cpu, peak)
        if n > 1:
            r["cost"]["trained_with"] = ",".join(str(c.seed) for c in cells)
    return results


def _finish_cell(
    result: dict[str, Any],
    dec: Any,
    toy: ToyModel,
    inputs: Any,
    device: str,
    memory_limit_mb: float | None,
    wall: float,
    cpu: float,
    peak: float,
) -> None:
    """Record one decomposition's cost, check it and store it as data in ``result`` (or make it an error row)."""
    stage = "decomposing"
    cuda = device.startswith("cuda")
    result["cost"] = {"wall_time_s": wall, "cpu_time_s": cpu}
    try:
        if isinstance(dec, BaseException):
            raise dec
        if not isinstance(dec, Decomposition):
            raise TypeError(f"decompose() returned {type(dec).__name__}, not a Decomposition")
        steps = dec.record.steps if isinstance(dec.record.steps, int) else None
        result["cost"] = {
            "wall_time_s": wall,
            "cpu_time_s": cpu,
            "peak_memory_mb": peak,
            "steps": steps,
            "stopped_early": bool(getattr(dec.record, "stopped_early", False)),
            "converged": converged(getattr(dec.record, "loss_curve", None) or ()),
            "n_components": len(dec.components) if isinstance(dec.components, list | tuple) else None,
            "memory_kind": "cuda_max_allocated" if cuda else "process_peak_rss",
        }
        if dec.record.hparams:
            result["method"]["hparams"] = jsonable(dec.record.hparams)
        stage = "validating the decomposition"
        check_devices(dec, device)
        dec.validate(toy.param_shapes())
        stage = "storing the decomposition"
        result[PAYLOAD] = StoredDecomposition.capture(dec, inputs).to_bytes()
        result["status"] = "ok"
    except (Exception, SystemExit) as exc:
        _fail(result, stage, exc, memory_limit_mb)


def score_result(
    result: dict[str, Any], toy: ToyModel | None = None, cache: WeightCache | None = None
) -> dict[str, Any]:
    """Score a result from :func:`run_method` from its stored decomposition (its :data:`PAYLOAD`), in this
    process. Adds ``metrics``, ``metric_versions`` and the ``decomposition`` record (SHA-256, size); the
    payload stays for the caller to store. A result that cannot be scored becomes an error row."""
    if result.get("status") != "ok":
        result.pop(PAYLOAD, None)
        return result
    stage = "reading the stored decomposition"
    try:
        data = result.get(PAYLOAD)
        if not isinstance(data, bytes):
            raise StoredDecompositionError("the worker returned no stored decomposition")
        cell = Cell(**result["cell"])
        stored = StoredDecomposition.from_bytes(data, f"decomposition of {cell}")
        stage = "scoring"
        toy = toy if toy is not None else load_toy(cell.toy, cache)
        if toy.build_info is None or toy.build_info.weights_sha256 != result["toy"].get("weights_sha256"):
            raise ValueError(f"the worker decomposed other weights of {cell.toy} than the scorer holds")
        compact = stored.compacted()
        record: dict[str, Any] = {"precision": compact.precision}
        if compact is not stored:  # a large decomposition: stored as float16, its shift from float32 recorded
            full = score_stored(toy, stored)
            data = compact.to_bytes()
            stored = StoredDecomposition.from_bytes(data, f"compacted decomposition of {cell}")
            result["metrics"] = score_stored(toy, stored)
            record["metric_shift"] = metric_shift(full, result["metrics"])
            result[PAYLOAD] = data
        else:
            result["metrics"] = score_stored(toy, stored)
        result["metric_versions"] = metric_versions(list(result["metrics"]))
        result["decomposition"] = {"sha256": sha256(data), "bytes": len(data), "format": "safetensors", **record}
    except (Exception, SystemExit) as exc:
        _fail(result, stage, exc, None)
        result.pop(PAYLOAD, None)
    return result


def metric_shift(before: dict[str, float | None], after: dict[str, float | None]) -> float:
    """The largest change of any metric between two scorings of one decomposition (0 where both are N/A)."""
    diffs = [abs(a - b) for k, a in before.items() if a is not None and (b := after.get(k)) is not None]
    return max(diffs, default=0.0)


def score_stored(toy: ToyModel, stored: StoredDecomposition) -> dict[str, float | None]:
    """Every built-in metric of a stored decomposition, as JSON-ready numbers (None: N/A).

    Always on one torch thread: a float64 reduction split over more threads rounds differently, and where a
    matching has exact ties (a fixed basis on a symmetric toy) that rounding would pick another unit, so
    the same file would score differently in the run and in a rescore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dec = stored.decomposition(eval_inputs(toy))
        dec.validate(toy.param_shapes())
        metrics = jsonable(score(toy, dec))
    finally:
        torch.set_num_threads(threads)
    bad = [k for k, v in metrics.items() if not (v is None or isinstance(v, int | float))]
    if bad:
        raise ValueError(f"metric(s) {bad} are not finite numbers: {[metrics[k] for k in bad]}")
    return metrics


def run_cell(
    cell: Cell,
    budget: Budget | None = None,
    device: str = "cpu",
    cache: WeightCache | None = None,
    hparams: dict[str, Any] | None = None,
    memory_limit_mb: float | None = None,
) -> dict[str, Any]:
    """Run and score one cell in this process (no isolation; tests, notebooks); the stored decomposition's
    bytes are dropped (``run_grid`` stores them)."""
    result = score_result(run_method(cell, budget, device, cache, hparams, memory_limit_mb), cache=cache)
    result.pop(PAYLOAD, None)
    return result


def _fail(result: dict[str, Any], stage: str, exc: BaseException, memory_limit_mb: float | None) -> None:
    message = str(exc) or repr(exc)
    if isinstance(exc, MemoryError) or "can't allocate memory" in message:
        message += (
            f" [the cell ran out of memory; the memory guard allows {memory_limit_mb:.0f} MiB per "
            "worker, set with --memory-limit-mb]"
            if memory_limit_mb
            else " [out of memory]"
        )
    result["status"] = "error"
    result["metrics"] = {}
    result["metric_versions"] = {}
    result["error"] = {
        "stage": stage,
        "type": type(exc).__name__,
        "message": message,
        "traceback": traceback.format_exc(),
    }


# -- the worker -> scorer message: JSON and raw bytes, never pickle ------------------------------------------
def encode_result(result: dict[str, Any]) -> tuple[bytes, bytes | None]:
    """A result as (JSON bytes, payload bytes or None), for a channel the scorer must not unpickle."""
    payload = result.get(PAYLOAD)
    head = {k: v for k, v in result.items() if k != PAYLOAD}
    return json.dumps(jsonable(head), allow_nan=False).encode(), payload if isinstance(payload, bytes) else None


def decode_result(head: bytes, payload: bytes | None) -> dict[str, Any]:
    result = json.loads(head)
    if not isinstance(result, dict):
        raise ValueError("a worker sent a result that is not a JSON object")
    if payload is not None:
        result[PAYLOAD] = payload
    return result
