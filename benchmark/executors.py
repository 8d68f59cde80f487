"""Executors: where and how the cells of a grid run.

- ``local`` (default): ``jobs`` worker processes started with ``spawn``. Each worker imports torch and the
  plugins once, then runs cells one at a time on ``threads`` intra-op threads (default 1: the toy models
  are small, and more threads per tiny op only contend; parallelism comes from the workers). The parent
  enforces a per-cell time limit and a memory guard (the worker's resident memory, polled; plus
  ``RLIMIT_DATA`` inside CPU workers, so a runaway allocation fails inside the cell). A worker that
  overruns, blows the guard or dies (segfault, ``os._exit``, the OOM killer) is killed and replaced; its
  cell becomes an error row and the other cells go on. ``cells_per_worker=1`` gives every cell a fresh process.
- ``serial``: in the calling process, without isolation or limits (debugging, profilers).
- ``ray``: one Ray task per cell (``max_calls=1``: a fresh worker process each), on the cluster that
  ``ray.init`` finds (``RAY_ADDRESS``) or a local one; plugin files are shipped by content.

Registered names are forwarded to the workers as ``module:object`` references, so methods and toy
models registered in the parent (by a test module, a notebook) are found in a worker too.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from benchmark.method import Budget
from benchmark.results import Cell

OnResult = Callable[[dict[str, Any]], None]
EXECUTORS = ("local", "serial", "ray")
MiB = 2**20


def total_memory_mb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MiB
    except (ValueError, OSError, AttributeError):
        return 8192.0


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Limits:
    """Per-cell guards. ``time_s``: wall-clock limit of one cell (None: none). ``memory_mb``: the most
    resident memory a worker may hold (None: 80% of the machine's memory shared among the workers)."""

    time_s: float | None = 3600.0
    memory_mb: float | None = None
    poll_s: float = 0.1

    def __post_init__(self) -> None:
        for name in ("time_s", "memory_mb"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and v > 0):
                raise ValueError(f"{name} must be a positive number or None, got {v!r}")

    def memory_for(self, jobs: int) -> float:
        return self.memory_mb if self.memory_mb is not None else 0.8 * total_memory_mb() / max(1, jobs)


@dataclass(frozen=True)
class CellTask:
    cell: Cell
    budget: Budget = field(default_factory=Budget)
    device: str = "cpu"
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerConfig:
    plugins: tuple[str, ...] = ()
    plugin_sources: tuple[tuple[str, str], ...] = ()  # (file name, source) for workers on other machines
    refs: tuple[tuple[str, str, str], ...] = ()  # (registry, name, module:object) registered in the parent
    cache_root: str | None = None
    threads: int = 1
    memory_mb: float | None = None
    device: str = "cpu"


def registry_refs(tasks: Sequence[CellTask]) -> tuple[tuple[tuple[str, str, str], ...], tuple[str, ...]]:
    """``module:object`` references of the methods and toy models the tasks use, where importable, and the
    plugin files (loaded in this process with ``load_plugin``) that define the others."""
    import sys

    from benchmark.registry import METHODS, TOY_MODELS

    refs, files = [], []
    for kind, reg, names in (
        ("method", METHODS, {t.cell.method for t in tasks}),
        ("toy", TOY_MODELS, {t.cell.toy for t in tasks}),
    ):
        for name in sorted(names):
            try:
                obj = reg.get(name)
            except Exception:
                continue  # the worker reports the unknown name in the cell's error row
            module = getattr(obj, "__module__", None)
            qual = getattr(obj, "__qualname__", None)
            if module and module.startswith("pdbench_plugin_"):
                path = getattr(sys.modules.get(module), "__file__", None)
                if path and path not in files:
                    files.append(path)
            elif module and qual and module != "__main__" and "<locals>" not in qual:
                refs.append((kind, name, f"{module}:{qual}"))
    return tuple(refs), tuple(files)


# -- inside a worker -------------------------------------------------------------------------------------
def init_worker(config: WorkerConfig) -> None:
    """Threads, memory guard, plugins and forwarded registrations of a fresh worker process."""
    import torch

    from benchmark.registry import METHODS, TOY_MODELS, RegistryError, load_plugin

    torch.set_num_threads(max(1, config.threads))
    if config.memory_mb is not None and not config.device.startswith("cuda"):
        try:
            import resource

            limit = int(config.memory_mb * MiB)
            _, hard = resource.getrlimit(resource.RLIMIT_DATA)
            if hard == resource.RLIM_INFINITY or limit < hard:
                resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
        except (ImportError, ValueError, OSError):
            pass  # the parent's RSS watchdog still guards
    for path in config.plugins:
        load_plugin(path)
    if config.plugin_sources:
        folder = Path(tempfile.mkdtemp(prefix="pdbench-plugins-"))
        for i, (name, source) in enumerate(config.plugin_sources):
            dest = folder / f"{i}_{Path(name).name}"
            dest.write_text(source)
            load_plugin(dest)
    for kind, name, ref in config.refs:
        reg = METHODS if kind == "method" else TOY_MODELS
        if name not in reg:
            try:
                reg.register(name, lazy=ref)
            except RegistryError:
                pass


def run_task(task: CellTask, config: WorkerConfig) -> dict[str, Any]:
    """Run one cell inside a worker, then restore the global torch state a method may have changed."""
    import torch

    from benchmark.cache import WeightCache
    from benchmark.runner import reset_peak_rss, run_cell

    reset_peak_rss()
    cache = WeightCache(config.cache_root) if config.cache_root else None
    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    try:
        return run_cell(task.cell, task.budget, task.device, cache, task.hparams, config.memory_mb)
    finally:
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        torch.set_num_threads(max(1, config.threads))


def _worker_main(conn: Connection, config: WorkerConfig) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    init_error = None
    try:
        init_worker(config)
    except BaseException as exc:  # noqa: BLE001 - reported in every cell's error row
        init_error = (type(exc).__name__, str(exc), traceback.format_exc())
    conn.send(("ready", os.getpid()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        if init_error is not None:
            from benchmark.runner import error_result

            result = error_result(task.cell, task.budget, task.device, "loading plugins", *init_error)
        else:
            result = run_task(task, config)
        conn.send(("result", result))


# -- the parent's side -------------------------------------------------------------------------------------
def toy_is_cached(name: str, cache_root: str | None) -> bool:
    """True when toy model ``name``'s weights are in the cache (its cells need not wait for a build)."""
    try:
        from benchmark.cache import WeightCache
        from benchmark.registry import TOY_MODELS

        return WeightCache(cache_root).paths(TOY_MODELS.get(name)().cache_key)[1].exists()
    except Exception:
        return False


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MiB, or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the kernel's OOM killer sends SIGKILL when memory runs out)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


class _Worker:
    def __init__(self, ctx, config: WorkerConfig):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, config), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.task: CellTask | None = None
        self.started = 0.0
        self.born = time.monotonic()
        self.n_done = 0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class LocalExecutor:
    """Cells on ``jobs`` spawned worker processes, with a time limit and a memory guard per cell."""

    startup_timeout_s = 600.0
    max_failed_starts = 3

    def __init__(
        self,
        jobs: int | None = None,
        limits: Any = None,
        plugins: Sequence[str] = (),
        cache_root: str | None = None,
        device: str = "cpu",
        cells_per_worker: int | None = None,
        threads: int | None = None,
    ):
        self.jobs = max(1, jobs or cpu_count())
        self.limits = limits or Limits()
        self.memory_mb = self.limits.memory_for(self.jobs)
        self.cells_per_worker = cells_per_worker
        self.config = WorkerConfig(
            plugins=tuple(plugins),
            cache_root=cache_root,
            threads=max(1, threads or 1),
            memory_mb=self.memory_mb,
            device=device,
        )

    def run(self, tasks: Sequence[CellTask], on_result: OnResult) -> None:
        from benchmark.runner import error_result

        refs, files = registry_refs(tasks)
        plugins = self.config.plugins + tuple(f for f in files if f not in self.config.plugins)
        config = WorkerConfig(**{**self.config.__dict__, "refs": refs, "plugins": plugins})
        ctx = mp.get_context("spawn")
        pending = deque(tasks)
        building: set[str] = set()  # toy models whose first cell is running (its weights may be training)
        built: set[str] = {t for t in {task.cell.toy for task in tasks} if toy_is_cached(t, config.cache_root)}
        workers: list[_Worker] = []
        retiring: list[_Worker] = []
        failed_starts = 0

        def next_task() -> CellTask | None:
            for i, t in enumerate(pending):
                if t.cell.toy in built or t.cell.toy not in building:
                    del pending[i]
                    if t.cell.toy not in built:
                        building.add(t.cell.toy)
                    return t
            return None

        def finish(w: _Worker, result: dict[str, Any]) -> None:
            assert w.task is not None
            building.discard(w.task.cell.toy)
            built.add(w.task.cell.toy)
            w.task = None
            w.n_done += 1
            on_result(result)

        def fail(w: _Worker, kind: str, message: str) -> None:
            task = w.task
            assert task is not None
            wall = time.monotonic() - w.started
            rss = rss_mb(w.proc.pid)
            w.kill()
            workers.remove(w)
            finish(
                w,
                error_result(
                    task.cell,
                    task.budget,
                    task.device,
                    "running the cell (worker process)",
                    kind,
                    message,
                    "",
                    {"wall_time_s": wall, "peak_memory_mb": rss},
                    config.cache_root,
                ),
            )

        try:
            while pending or any(w.task for w in workers):
                while len(workers) < min(self.jobs, len(pending) + sum(w.task is not None for w in workers)):
                    workers.append(_Worker(ctx, config))
                for w in workers:
                    if w.ready and w.task is None and pending:
                        task = next_task()
                        if task is None:
                            break
                        w.task, w.started = task, time.monotonic()
                        w.conn.send(task)
                waitables = [w.conn for w in workers] + [w.proc.sentinel for w in workers]
                wait(waitables, timeout=self.limits.poll_s)
                now = time.monotonic()
                for w in list(workers):
                    msg = None
                    if w.conn.poll():
                        try:
                            msg = w.conn.recv()
                        except (EOFError, OSError):
                            msg = None
                    if msg is not None and msg[0] == "ready":
                        w.ready, failed_starts = True, 0
                    elif msg is not None and msg[0] == "result":
                        finish(w, msg[1])
                        if self.cells_per_worker and w.n_done >= self.cells_per_worker:
                            w.conn.send(None)  # it exits on its own; reaped at the end
                            workers.remove(w)
                            retiring.append(w)
                    elif not w.proc.is_alive():
                        if w.task is not None:
                            fail(
                                w,
                                "WorkerDied",
                                f"the worker process running the cell "
                                f"{describe_exit(w.proc.exitcode)} before returning a result",
                            )
                        else:
                            w.kill()
                            workers.remove(w)
                            failed_starts += not w.ready
                            if failed_starts >= self.max_failed_starts:
                                raise RuntimeError(
                                    f"{failed_starts} worker processes in a row died while "
                                    f"starting ({describe_exit(w.proc.exitcode)}); run with "
                                    "--executor serial to see why"
                                )
                    elif w.task is not None:
                        rss = rss_mb(w.proc.pid)
                        if self.limits.time_s is not None and now - w.started > self.limits.time_s:
                            fail(
                                w,
                                "TimeLimitExceeded",
                                f"the cell ran longer than its time limit of "
                                f"{self.limits.time_s:g} s and was stopped (set with --time-limit)",
                            )
                        elif rss is not None and rss > self.memory_mb:
                            fail(
                                w,
                                "MemoryLimitExceeded",
                                f"the worker's resident memory reached {rss:.0f} MiB, "
                                f"over the memory guard of {self.memory_mb:.0f} MiB, and the cell was stopped "
                                "(set with --memory-limit-mb)",
                            )
                    elif not w.ready and now - w.born > self.startup_timeout_s:
                        raise RuntimeError(f"a worker process did not start within {self.startup_timeout_s:g} s")
        finally:
            for w in workers:
                if w.task is None and w.proc.is_alive():
                    try:
                        w.conn.send(None)
                    except OSError:
                        pass
            for w in workers + retiring:
                w.proc.join(timeout=2 if w.task is None else 0)
                w.kill()


class SerialExecutor:
    """Cells one after another in this process: no isolation, no limits (a crash ends the run).

    Like the local executor's workers it runs torch with ``threads`` intra-op threads (default 1; torch's
    own default oversubscribes a shared machine badly), and restores the caller's setting afterwards.
    """

    def __init__(self, device: str = "cpu", cache_root: str | None = None, threads: int | None = None, **_: Any):
        self.cache_root = cache_root
        self.threads = threads or 1

    def run(self, tasks: Sequence[CellTask], on_result: OnResult) -> None:
        import torch

        from benchmark.cache import WeightCache
        from benchmark.runner import run_cell

        cache = WeightCache(self.cache_root) if self.cache_root else None
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            for t in tasks:
                on_result(run_cell(t.cell, t.budget, t.device, cache, t.hparams))
        finally:
            torch.set_num_threads(before)


class TimeLimitExceeded(Exception):
    """Raised inside a cell by the in-process alarm when it overruns its time limit."""


def _alarm(signum: int, frame: Any) -> None:
    raise TimeLimitExceeded("the cell ran longer than its time limit and was stopped (set with --time-limit)")


def _ray_cell(task: CellTask, config: WorkerConfig, time_s: float | None) -> dict[str, Any]:
    """A Ray task: the time limit is an alarm started after the worker's start-up, so a busy cluster's
    scheduling and process start-up do not count against the cell; the driver keeps a backstop."""
    init_worker(config)
    armed = False
    if time_s is not None:
        try:
            signal.signal(signal.SIGALRM, _alarm)
            signal.setitimer(signal.ITIMER_REAL, time_s)
            armed = True
        except (ValueError, AttributeError, OSError):  # not the main thread, or no SIGALRM (Windows)
            pass
    try:
        return run_task(task, config)
    finally:
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)


class RayExecutor:
    """One Ray task per cell on a Ray cluster (``RAY_ADDRESS``) or a local instance with ``jobs`` CPUs.

    The time limit runs inside the task (an alarm); the driver cancels a task that outlives it by more
    than ``backstop_s`` (a hang in native code that the alarm cannot interrupt)."""

    backstop_s = 300.0

    def __init__(
        self,
        jobs: int | None = None,
        limits: Any = None,
        plugins: Sequence[str] = (),
        cache_root: str | None = None,
        device: str = "cpu",
        address: str | None = None,
        **_: Any,
    ):
        self.jobs = jobs
        self.limits = limits or Limits()
        self.address = address
        self.device = device
        sources = tuple((Path(p).name, Path(p).read_text()) for p in plugins)
        self.config = WorkerConfig(
            plugin_sources=sources,
            cache_root=cache_root,
            threads=1,
            memory_mb=self.limits.memory_for(jobs or cpu_count()),
            device=device,
        )

    def run(self, tasks: Sequence[CellTask], on_result: OnResult) -> None:
        try:
            import ray
            from ray.exceptions import RayError
        except ImportError:
            raise RuntimeError("--executor ray needs Ray: pip install 'pdbench[ray]'") from None
        from benchmark.runner import error_result

        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS")
            kw: dict[str, Any] = {"address": address} if address else {"num_cpus": self.jobs or cpu_count()}
            ray.init(include_dashboard=False, log_to_driver=False, **kw)
        refs, files = registry_refs(tasks)
        known = {name for name, _ in self.config.plugin_sources}
        sources = self.config.plugin_sources + tuple(
            (Path(f).name, Path(f).read_text()) for f in files if Path(f).name not in known
        )
        config = WorkerConfig(**{**self.config.__dict__, "refs": refs, "plugin_sources": sources})
        gpus = 1 if self.device.startswith("cuda") else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_calls=1, max_retries=0)(_ray_cell)
        capacity = max(1, int(ray.available_resources().get("GPU" if gpus else "CPU", 1)))
        pending = deque(tasks)
        inflight: dict[Any, tuple[CellTask, float]] = {}
        while pending or inflight:
            while pending and len(inflight) < capacity:
                t = pending.popleft()
                inflight[remote.remote(t, config, self.limits.time_s)] = (t, time.monotonic())
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=self.limits.poll_s * 5)
            for ref in ready:
                task, t0 = inflight.pop(ref)
                try:
                    on_result(ray.get(ref))
                except RayError as exc:
                    on_result(
                        error_result(
                            task.cell,
                            task.budget,
                            task.device,
                            "running the cell (Ray task)",
                            type(exc).__name__,
                            str(exc).strip()[-2000:],
                            "",
                            {"wall_time_s": time.monotonic() - t0},
                            config.cache_root,
                        )
                    )
            now = time.monotonic()
            for ref, (task, t0) in list(inflight.items()):
                if self.limits.time_s is not None and now - t0 > self.limits.time_s + self.backstop_s:
                    ray.cancel(ref, force=True)
                    del inflight[ref]
                    on_result(
                        error_result(
                            task.cell,
                            task.budget,
                            task.device,
                            "running the cell (Ray task)",
                            "TimeLimitExceeded",
                            f"the cell ran longer than its time limit of "
                            f"{self.limits.time_s:g} s and was stopped (set with --time-limit)",
                            "",
                            {"wall_time_s": now - t0},
                            config.cache_root,
                        )
                    )


def make_executor(
    name: str,
    *,
    jobs: int | None = None,
    limits: Any = None,
    plugins: Sequence[str] = (),
    cache_root: str | None = None,
    device: str = "cpu",
    cells_per_worker: int | None = None,
    threads: int | None = None,
):
    """The executor called ``name`` ('local', 'serial' or 'ray')."""
    if name == "local":
        return LocalExecutor(jobs, limits, plugins, cache_root, device, cells_per_worker, threads)
    if name == "serial":
        return SerialExecutor(device=device, cache_root=cache_root, threads=threads)
    if name == "ray":
        return RayExecutor(jobs, limits, plugins, cache_root, device)
    raise ValueError(f"unknown executor {name!r}; known executors: {', '.join(EXECUTORS)}")
