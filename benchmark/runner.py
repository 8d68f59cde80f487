"""Running cells: build the toy model, decompose, validate, score, and store one JSON per cell.

``run_cell`` runs one cell in the calling process and never raises for a fault of the method or toy
model: the cell becomes an error row with the stage, message and traceback. ``run_grid`` runs many cells
through an executor (:mod:`benchmark.executors`: worker processes by default, each cell under a time
limit and a memory guard, or a Ray cluster), writes each result atomically as soon as it arrives, and
skips cells already stored, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from benchmark import __version__
from benchmark.cache import WeightCache
from benchmark.decomposition import Decomposition, DecompositionError, LowRank
from benchmark.method import Budget, Method
from benchmark.registry import METHODS, load_plugin
from benchmark.results import (
    SCHEMA_VERSION,
    Cell,
    ResultError,
    environment,
    git_commit,
    now,
    read_result,
    remove_stale_temp_files,
    set_aside,
    stored_status,
    write_result,
)
from benchmark.scoring import HEADLINE, metric_versions, score
from benchmark.toy import ToyModel, load_toy

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    """The CLI's log: messages on stderr; with it, the progress bar redraws one line on a terminal."""
    print(message, file=sys.stderr, flush=True)


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
    return {
        "name": name,
        "class": f"{method_cls.__module__}:{method_cls.__qualname__}",
        "version": str(getattr(method_cls, "version", "?")),
        "paper": str(getattr(method_cls, "paper", "")),
        "reference_row": bool(getattr(method_cls, "reference_row", False)),
        "sees_ground_truth": bool(getattr(method_cls, "sees_ground_truth", False)),
    }


def describe(cell: Cell, cache_root: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Best-effort toy and method records for an error row made outside the cell. Nothing is built: the toy
    record is filled only where the toy's weights are in the cache (so it names the same build as the ok
    rows); otherwise it carries just the name."""
    from benchmark.registry import TOY_MODELS

    toy: dict[str, Any] = {"name": cell.toy}
    method: dict[str, Any] = {"name": cell.method}
    try:
        model = TOY_MODELS.get(cell.toy)()
        _, meta_path = WeightCache(cache_root).paths(model.cache_key)
        meta = json.loads(meta_path.read_text())
        toy = {
            **model.spec.to_dict(),
            "name": cell.toy,
            "weights_sha256": str(meta["weights_sha256"]),
            "train_seed": int(meta["train_seed"]),
        }
    except Exception:
        pass
    try:
        method = method_record(cell.method, METHODS.get(cell.method))
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


def run_cell(
    cell: Cell,
    budget: Budget | None = None,
    device: str = "cpu",
    cache: WeightCache | None = None,
    hparams: dict[str, Any] | None = None,
    memory_limit_mb: float | None = None,
) -> dict[str, Any]:
    """Run one cell and return its result record (status 'ok' or 'error'); never raises for method faults."""
    budget = budget or Budget()
    result = base_record(cell, budget, device)
    stage = "loading the toy model"
    t0 = time.perf_counter()
    try:
        toy = load_toy(cell.toy, cache)
        result["toy"] = toy_record(toy)
        stage = "loading the method"
        method_cls = METHODS.get(cell.method)
        if not (isinstance(method_cls, type) and issubclass(method_cls, Method)):
            raise TypeError(f"method {cell.method!r} is {method_cls!r}, not a subclass of benchmark.method.Method")
        method: Method = method_cls(**(hparams or {}))
        result["method"] = {**method_record(cell.method, method_cls), "hparams": jsonable(method.hparams(cell.toy))}
        stage = "decomposing"
        target = toy.target(with_ground_truth=method_cls.sees_ground_truth)
        torch.manual_seed(cell.seed)
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
        c0 = time.process_time()
        try:
            dec = method.decompose(target, budget, cell.seed, device)
        finally:  # a method's global torch settings must not leak into scoring or the next cell
            torch.set_default_dtype(dtype)
            torch.set_grad_enabled(grad)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if not isinstance(dec, Decomposition):
            raise TypeError(f"decompose() returned {type(dec).__name__}, not a Decomposition")
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb()
        steps = dec.record.steps if isinstance(dec.record.steps, int) else None
        result["cost"] = {
            "wall_time_s": wall,
            "cpu_time_s": cpu,
            "peak_memory_mb": peak,
            "steps": steps,
            "stopped_early": bool(getattr(dec.record, "stopped_early", False)),
            "n_components": len(dec.components) if isinstance(dec.components, list | tuple) else None,
            "memory_kind": "cuda_max_allocated" if cuda else "process_peak_rss",
        }
        if dec.record.hparams:
            result["method"]["hparams"] = jsonable(dec.record.hparams)
        stage = "validating the decomposition"
        check_devices(dec, device)
        dec.validate(toy.param_shapes())
        stage = "scoring"
        result["metrics"] = jsonable(score(toy, dec))
        bad = [k for k, v in result["metrics"].items() if not (v is None or isinstance(v, int | float))]
        if bad:
            raise ValueError(f"metric(s) {bad} are not finite numbers: {[result['metrics'][k] for k in bad]}")
        result["metric_versions"] = metric_versions(list(result["metrics"]))
        result["status"] = "ok"
    except (Exception, SystemExit) as exc:
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
        result["error"] = {
            "stage": stage,
            "type": type(exc).__name__,
            "message": message,
            "traceback": traceback.format_exc(),
        }
        result["cost"].setdefault("wall_time_s", time.perf_counter() - t0)
    return result


def toy_record(toy: ToyModel) -> dict[str, Any]:
    info = toy.build_info
    assert info is not None
    return {
        **toy.spec.to_dict(),
        "weights_sha256": info.weights_sha256,
        "train_seed": info.train_seed,
        "build": jsonable(info.extra),
    }


class Progress:
    """A one-line progress report on stderr: done/total, errors, elapsed time and an estimate of the rest."""

    def __init__(self, total: int, log: Log | None = None, stream=None):
        self.total, self.done, self.errors = total, 0, 0
        self.t0 = time.perf_counter()
        self.stream = stream if stream is not None else sys.stderr
        self.tty = log in (None, stderr_log) and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log = None if self.tty else log

    @staticmethod
    def _fmt(seconds: float) -> str:
        s = int(round(seconds))
        return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"

    def line(self, last: str = "") -> str:
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        width = 20
        filled = int(width * self.done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        eta_s = self._fmt(eta) if self.done else "?"
        return (
            f"[{bar}] {self.done}/{self.total} ({self.errors} errors) elapsed {self._fmt(elapsed)}, "
            f"~{eta_s} left" + (f" | {last}" if last else "")
        )

    def update(self, result: dict[str, Any]) -> None:
        self.done += 1
        cell = Cell(**result["cell"])
        if result["status"] == "ok":
            head = result["metrics"].get(result.get("headline", HEADLINE))
            wall = result["cost"].get("wall_time_s")
            last = f"{cell}: ok" + (f" {HEADLINE}={head:.3f}" if isinstance(head, float) else "")
            last += f" ({wall:.1f}s)" if isinstance(wall, float) else ""
        else:
            self.errors += 1
            err = result["error"]
            last = f"{cell}: ERROR in {err['stage']}: {err['type']}: {err['message'].splitlines()[0][:160]}"
        self.emit(self.line(last))

    def emit(self, text: str) -> None:
        if self.log is not None:
            self.log(text)
        elif self.tty:
            self.stream.write("\r\033[K" + text[:200])
            self.stream.flush()
            if self.done == self.total:
                self.stream.write("\n")
        else:
            print(text, file=self.stream, flush=True)


def plan(
    cells: Iterable[Cell], results_dir: Path, rerun: bool = False, retry_errors: bool = False, log: Log = print
) -> list[Cell]:
    """The cells still to run. Stored ok rows are skipped; stored error rows too unless ``retry_errors``;
    a stored file that is refused (corrupt, unknown schema) is renamed aside and its cell re-run."""
    cells = sorted(set(cells))
    todo, n_ok, n_err = [], 0, 0
    for c in cells:
        status = None if rerun else stored_status(results_dir, c)
        if status == "invalid":
            path = c.path(results_dir)
            try:
                read_result(path, results_dir)
            except ResultError as exc:
                log(f"warning: refused stored result: {exc}")
            log(f"warning: moved it to {set_aside(path)}; the cell will run again")
            status = None
        if status == "ok":
            n_ok += 1
        elif status == "error" and not retry_errors:
            n_err += 1
        else:
            todo.append(c)
    msg = f"{len(cells)} cells: {n_ok + n_err} already stored"
    if n_err:
        msg += f" ({n_err} error rows, kept; --retry-errors runs them again)"
    log(msg + f", {len(todo)} to run")
    return todo


def run_grid(
    cells: Iterable[Cell],
    results_dir: Path,
    budget: Budget | None = None,
    device: str = "cpu",
    cache: WeightCache | None = None,
    plugins: Iterable[str] = (),
    rerun: bool = False,
    log: Log = print,
    *,
    executor: str = "local",
    jobs: int | None = None,
    limits: Any = None,
    budgets: Mapping[str, Budget] | None = None,
    retry_errors: bool = False,
    progress: bool = True,
    hparams: Mapping[str, dict[str, Any]] | None = None,
    cells_per_worker: int | None = None,
    threads: int | None = None,
) -> list[Path]:
    """Run every cell not already stored; write each result as it arrives; return the paths written.

    ``executor``: 'local' (worker processes, the default), 'serial' (in this process, no isolation) or
    'ray'. ``jobs``: parallel workers (default: one per CPU core). ``limits``: an
    :class:`benchmark.executors.Limits` (time limit, memory guard). ``budgets``: per-method budgets that
    override ``budget``. ``hparams``: per-method hyperparameter overrides. ``cells_per_worker``: restart a
    local worker after that many cells (1: a fresh process per cell). ``threads``: torch intra-op threads per
    local worker (default 1).
    """
    from benchmark.executors import CellTask, Limits, make_executor

    plugins = [str(Path(p).expanduser().resolve()) for p in plugins]
    for p in plugins:
        load_plugin(p)
    results_dir = Path(results_dir)
    removed = remove_stale_temp_files(results_dir)
    if removed:
        log(f"removed {removed} temporary file(s) left by an interrupted writer")
    todo = plan(cells, results_dir, rerun, retry_errors, log)
    if not todo:
        return []
    budget = budget or Budget()
    tasks = [
        CellTask(c, (budgets or {}).get(c.method, budget), device, dict((hparams or {}).get(c.method, {})))
        for c in todo
    ]
    ex = make_executor(
        executor,
        jobs=jobs,
        limits=limits or Limits(),
        plugins=plugins,
        cache_root=str(cache.root) if cache is not None else None,
        device=device,
        cells_per_worker=cells_per_worker,
        threads=threads,
    )
    bar = Progress(len(tasks), log)
    written: list[Path] = []

    def on_result(result: dict[str, Any]) -> None:
        try:
            written.append(write_result(results_dir, result))
        except (ResultError, TypeError, ValueError) as exc:  # a result that cannot be stored honestly
            cell = Cell(**result["cell"])
            row = error_result(
                cell, budget, device, "storing the result", type(exc).__name__, str(exc), traceback.format_exc()
            )
            written.append(write_result(results_dir, row))
            result = row
        if progress:
            bar.update(result)

    if progress:
        bar.emit(bar.line(f"running {len(tasks)} cells with the {executor} executor"))
    ex.run(tasks, on_result)
    return written


def summarise(paths: Iterable[Path]) -> dict[str, int]:
    """Counts of ok and error rows among the written files."""
    counts = {"ok": 0, "error": 0}
    for p in paths:
        counts[json.loads(Path(p).read_text())["status"]] += 1
    return counts
