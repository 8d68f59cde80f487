"""Executors: where and how the cells of a grid run.

- ``local`` (default): ``jobs`` worker processes, forked from a server that has imported torch
  (:mod:`benchmark.processes`; spawned where the platform has none). Each worker loads the plugins once,
  then runs cells one at a time on ``threads`` intra-op threads (default 1: the toy models
  are small, and more threads per tiny op only contend; parallelism comes from the workers). The parent
  enforces a per-cell time limit and a memory guard (the worker's resident memory, polled; plus
  ``RLIMIT_DATA`` inside CPU workers, so a runaway allocation fails inside the cell). A worker that
  overruns, blows the guard or dies (segfault, ``os._exit``, the OOM killer) is killed and replaced; its
  cell becomes an error row and the other cells go on. ``cells_per_worker=1`` gives every cell a fresh process.
  In a run's last round (``share_tail``), where every worker is busy and fewer cells wait than there are
  workers, the waiting cells start at once on up to ``jobs - 1`` extra workers and share the cores.
- ``serial``: in the calling process, without isolation or limits (debugging, profilers).
- ``ray``: one Ray task per cell (``max_calls=1``: a fresh worker process each), on the cluster that
  ``ray.init`` finds (``RAY_ADDRESS``) or a local one; plugin files are shipped by content.

Registered names are forwarded to the workers as ``module:object`` references, so methods and toy
models registered in the parent (by a test module, a notebook) are found in a worker too.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from benchmark.allocator import keep_freed_memory, release_freed_memory
from benchmark.cell import decode_result, encode_result, error_result, reset_peak_rss, run_methods
from benchmark.method import Budget
from benchmark.processes import ParentEnvironment, watch_parent, worker_context
from benchmark.results import Cell

OnResult = Callable[[dict[str, Any]], None]
EXECUTORS = ("local", "serial", "ray")
MiB = 2**20


def total_memory_mb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MiB
    except (ValueError, OSError, AttributeError):
        return 8192.0


def _proc_mb(path: str, key: str) -> float | None:
    """The ``key:`` line of a Linux ``/proc`` file (a size in kB) in MiB, or None where it cannot be read."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory_mb() -> float | None:
    """The memory the kernel says a new process could take without swapping (Linux ``MemAvailable``); None
    where it is not known."""
    return _proc_mb("/proc/meminfo", "MemAvailable")


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
    """One cell to run, or with ``seeds`` a group: the cell and the same (toy model, method) at those seeds too,
    trained together (:meth:`~benchmark.method.Method.decompose_seeds`); a group sends one result per cell."""

    cell: Cell
    budget: Budget = field(default_factory=Budget)
    device: str = "cpu"
    hparams: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = ()  # more seeds trained together with cell.seed

    @property
    def cells(self) -> list[Cell]:
        return [self.cell] + [replace(self.cell, seed=s) for s in self.seeds]

    def time_limit(self, per_cell: float | None) -> float | None:
        """The task's wall-clock limit: a group has the per-cell limit once for each of its seeds."""
        return None if per_cell is None else per_cell * len(self.cells)


@dataclass(frozen=True)
class WorkerConfig:
    plugins: tuple[str, ...] = ()
    plugin_sources: tuple[tuple[str, str], ...] = ()  # (file name, source) for workers on other machines
    refs: tuple[tuple[str, str, str], ...] = ()  # (registry, name, module:object) registered in the parent
    cache_root: str | None = None
    threads: int = 1
    memory_mb: float | None = None
    device: str = "cpu"
    environment: ParentEnvironment | None = None  # a local worker's parent's environment variables


def registry_refs(tasks: Sequence[CellTask]) -> tuple[tuple[tuple[str, str, str], ...], tuple[str, ...]]:
    """``module:object`` references of the methods and toy models the tasks use that this process has
    registered itself (a test module, a notebook), and the plugin files it loaded itself that define others,
    so that a worker finds them too. Nothing is imported here: names from plugin files given to the run
    and from entry points are resolved by the workers."""
    from benchmark.registry import METHODS, TOY_MODELS

    refs, files = [], []
    for kind, reg, names in (
        ("method", METHODS, {t.cell.method for t in tasks}),
        ("toy", TOY_MODELS, {t.cell.toy for t in tasks}),
    ):
        for name in sorted(names):
            lazy = reg.lazy_ref(name)
            if lazy is not None and not lazy.startswith("__main__:"):
                refs.append((kind, name, lazy))
                continue
            obj = reg.builtin(name)
            module = getattr(obj, "__module__", None)
            qual = getattr(obj, "__qualname__", None)
            if module and module.startswith("pdbench_plugin_"):
                path = getattr(sys.modules.get(module), "__file__", None)
                if path and path not in files:
                    files.append(path)
            elif module and qual and module != "__main__" and "<locals>" not in qual:
                refs.append((kind, name, f"{module}:{qual}"))
    return tuple(refs), tuple(files)


def contain_worker() -> None:
    """Put this worker in its own process group (the parent kills the group, children included) and ask
    Linux to kill it when the parent dies, even by SIGKILL."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            if os.getppid() == 1:  # the parent died before the call
                os._exit(1)
        except (OSError, AttributeError):
            pass


def init_worker(config: WorkerConfig) -> None:
    """Threads, memory guard, plugins and forwarded registrations of a fresh worker process."""
    import torch

    from benchmark.registry import METHODS, TOY_MODELS, RegistryError, load_plugin

    keep_freed_memory()
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


def run_task(task: CellTask, config: WorkerConfig) -> list[dict[str, Any]]:
    """Run a task's method inside a worker (one result per cell), then restore the global torch state a method
    may have changed."""
    import torch

    from benchmark.cache import WeightCache

    release_freed_memory()  # what the last cell freed is not this cell's peak
    reset_peak_rss()
    cache = WeightCache(config.cache_root) if config.cache_root else None
    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    try:
        return run_methods(task.cells, task.budget, task.device, cache, task.hparams, config.memory_mb)
    finally:
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        torch.set_num_threads(max(1, config.threads))


def _send(conn: Connection, kind: str, result: dict[str, Any] | None = None, pid: int | None = None) -> None:
    """Worker -> parent: JSON and raw bytes only, so the scoring process never unpickles a worker's data."""
    if result is None:
        conn.send_bytes(json.dumps({"kind": kind, "pid": pid}).encode())
        return
    head, payload = encode_result(result)
    conn.send_bytes(json.dumps({"kind": kind, "payload": payload is not None}).encode())
    conn.send_bytes(head)
    if payload is not None:
        conn.send_bytes(payload)


def _receive(conn: Connection) -> tuple[str, Any]:
    """The parent's side of :func:`_send`: ('ready', pid) or ('result', result dict)."""
    header = json.loads(conn.recv_bytes(1 << 16))
    if not isinstance(header, dict) or header.get("kind") not in ("ready", "result"):
        raise ValueError(f"a worker sent an unknown message {str(header)[:100]!r}")
    if header["kind"] == "ready":
        return "ready", header.get("pid")
    head = conn.recv_bytes(64 * MiB)
    payload = conn.recv_bytes(512 * MiB) if header.get("payload") else None
    return "result", decode_result(head, payload)


def _worker_main(conn: Connection, config: WorkerConfig, lifeline: Connection | None = None) -> None:
    if config.environment is not None:
        config.environment.apply()
    contain_worker()
    if lifeline is not None:
        watch_parent(lifeline)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    init_error = None
    try:
        init_worker(config)
    except BaseException as exc:  # noqa: BLE001 - reported in every cell's error row
        init_error = (type(exc).__name__, str(exc), traceback.format_exc())
    _send(conn, "ready", pid=os.getpid())
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        if init_error is not None:
            results = [error_result(c, task.budget, task.device, "loading plugins", *init_error) for c in task.cells]
        else:
            results = run_task(task, config)
        for result in results:
            _send(conn, "result", result)


# -- the parent's side -------------------------------------------------------------------------------------
def toy_is_cached(name: str, cache_root: str | None) -> bool:
    """True when toy model ``name``'s weights are shipped or in the cache (its cells need not wait for a build)."""
    try:
        from benchmark.cache import WeightCache
        from benchmark.registry import TOY_MODELS

        return TOY_MODELS.get(name)().stored_meta(WeightCache(cache_root)) is not None
    except Exception:
        return False


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MiB, or None where it cannot be read."""
    return _proc_mb(f"/proc/{pid}/status", "VmRSS")


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
        life, self.lifeline = ctx.Pipe(duplex=False)  # never written: its end closes when this process dies
        self.proc = ctx.Process(target=_worker_main, args=(child, config, life), daemon=True)
        self.proc.start()
        child.close()
        life.close()
        self.ready = False
        self.task: CellTask | None = None
        self.reported: set[Cell] = set()  # the task's cells whose results arrived
        self.started = 0.0
        self.born = time.monotonic()
        self.n_done = 0

    def kill(self) -> None:
        """Kill the worker's whole process group (children a method started included)."""
        pid = self.proc.pid
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, OSError):
                pass
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()
        self.lifeline.close()


class LocalExecutor:
    """Cells on ``jobs`` worker processes, with a time limit and a memory guard per cell.

    :meth:`run` loops over three steps: :meth:`_schedule` (start workers, hand out cells, one toy model's
    first cell at a time so its weights train once), :meth:`_poll` (read what workers sent) and
    :meth:`_police` (time limit, memory guard, dead workers: the cell becomes an error row).

    ``share_tail``: in the last round, the waiting cells share the cores with the running ones rather than
    wait for a free worker (:meth:`_workers_wanted`): three equal cells on two cores take 1.5 cells' time,
    not 2. Each worker keeps one intra-op thread, so no cell's numbers change; only its wall time grows."""

    startup_timeout_s = 600.0
    max_failed_starts = 3
    announce: Callable[[str], None] | None = None  # told when a cell will train a toy model's weights
    tick: Callable[[], None] | None = None  # called at every poll (a progress heartbeat between results)

    def __init__(
        self,
        jobs: int | None = None,
        limits: Limits | None = None,
        plugins: Sequence[str] = (),
        cache_root: str | None = None,
        device: str = "cpu",
        cells_per_worker: int | None = None,
        threads: int | None = None,
        share_tail: bool = True,
    ):
        self.jobs = max(1, jobs or cpu_count())
        self.limits = limits or Limits()
        self.cells_per_worker = cells_per_worker
        self.share_tail = share_tail
        self.config = WorkerConfig(
            plugins=tuple(plugins), cache_root=cache_root, threads=max(1, threads or 1), device=device
        )
        self.memory_mb = self.limits.memory_for(self.jobs)

    def run(self, tasks: Sequence[CellTask], on_result: OnResult) -> None:
        n_workers = min(self.jobs, len(tasks))
        self.memory_mb = self.limits.memory_for(n_workers)  # shared among the workers actually started
        refs, files = registry_refs(tasks)
        plugins = self.config.plugins + tuple(f for f in files if f not in self.config.plugins)
        self._config = replace(
            self.config, refs=refs, plugins=plugins, memory_mb=self.memory_mb, environment=ParentEnvironment.capture()
        )
        self._ctx = worker_context()
        self._pending = deque(tasks)
        self._building: set[str] = set()  # toy models whose first cell is running (weights may be training)
        self._built = {t for t in {task.cell.toy for task in tasks} if toy_is_cached(t, self._config.cache_root)}
        self._to_train = {task.cell.toy for task in tasks} - self._built
        self._workers: list[_Worker] = []
        self._retiring: list[_Worker] = []
        self._failed_starts = 0
        self._on_result = on_result
        try:
            while self._pending or any(w.task for w in self._workers):
                self._schedule()
                waitables = [w.conn for w in self._workers] + [w.proc.sentinel for w in self._workers]
                wait(waitables, timeout=self.limits.poll_s)
                for w in list(self._workers):
                    if not self._poll(w):
                        self._police(w)
                if self.tick is not None:
                    self.tick()
        finally:
            self._shutdown()

    # -- scheduling ---------------------------------------------------------------------------------------
    def _workers_wanted(self) -> int:
        """One worker per running or waiting task, at most ``jobs``; with ``share_tail``, when every worker is
        busy and fewer tasks wait than ``jobs``, one more per waiting task (at most ``jobs - 1`` more), while the
        machine has more memory free than one worker's guard. Processor sharing of the last round: on ``jobs``
        cores its cells end together instead of the last one running alone beside idle cores."""
        busy = sum(w.task is not None for w in self._workers)
        waiting = len(self._pending)
        wanted = min(self.jobs, waiting + busy)
        if self.share_tail and 0 < waiting < self.jobs and busy >= self.jobs and len(self._workers) < busy + waiting:
            free = available_memory_mb()
            if free is not None and free > self.memory_mb:
                wanted = min(busy + waiting, 2 * self.jobs - 1)
        return wanted

    def _schedule(self) -> None:
        while len(self._workers) < self._workers_wanted():
            self._workers.append(_Worker(self._ctx, self._config))
        for w in self._workers:
            if w.ready and w.task is None and self._pending:
                task = self._next_task()
                if task is None:
                    break
                w.task, w.started, w.reported = task, time.monotonic(), set()
                w.conn.send(task)

    def _next_task(self) -> CellTask | None:
        """The first pending task of a toy model still to train, else the first whose toy model is built. A
        build holds one worker, so each starts as early as it can: on a fresh cache the quick suite's
        ``tms_40-10`` (a minute of training) otherwise began only once the toy models before it were done."""
        started = self._built | self._building
        fresh = (i for i, t in enumerate(self._pending) if t.cell.toy not in started)
        ready = (i for i, t in enumerate(self._pending) if t.cell.toy in self._built)
        i = next(fresh, None)
        i = next(ready, None) if i is None else i
        if i is None:
            return None
        t = self._pending[i]
        del self._pending[i]
        if t.cell.toy not in self._built:
            self._building.add(t.cell.toy)
            self._to_train.discard(t.cell.toy)
            if self.announce is not None:
                left = len(self._to_train)
                self.announce(
                    f"training {t.cell.toy} (not in the weight cache; its first cell, {t.cell}, builds it"
                    f"{f'; {left} more toy model(s) to train after it' if left else ''})"
                )
        return t

    # -- polling ------------------------------------------------------------------------------------------
    def _poll(self, w: _Worker) -> bool:
        """Handle one message from ``w``; True when there was one."""
        if not w.conn.poll():
            return False
        try:
            kind, value = _receive(w.conn)
        except (EOFError, OSError):
            return False
        except ValueError as exc:  # unreadable: the worker is not trusted any more
            if w.task is not None:
                self._fail(w, "BadWorkerMessage", f"the worker sent a message that is not a result ({exc})")
            return True
        if kind == "ready":
            w.ready, self._failed_starts = True, 0
        elif w.task is not None:
            self._finish(w, value)
            if w.task is None and self.cells_per_worker and w.n_done >= self.cells_per_worker:
                w.conn.send(None)  # it exits on its own; reaped at the end
                self._workers.remove(w)
                self._retiring.append(w)
        return True

    def _finish(self, w: _Worker, result: dict[str, Any]) -> None:
        """One cell's result; the worker is free once every cell of its task has reported."""
        task = w.task
        assert task is not None
        w.reported.add(Cell(**result["cell"]) if isinstance(result.get("cell"), dict) else task.cell)
        if w.reported >= set(task.cells):
            self._building.discard(task.cell.toy)
            self._built.add(task.cell.toy)
            w.task = None
            w.n_done += 1
        self._on_result(result)

    # -- failures -----------------------------------------------------------------------------------------
    def _police(self, w: _Worker) -> None:
        now = time.monotonic()
        if not w.proc.is_alive():
            if w.task is not None:
                died = describe_exit(w.proc.exitcode)
                self._fail(w, "WorkerDied", f"the worker process running the cell {died} before returning a result")
                return
            w.kill()
            self._workers.remove(w)
            self._failed_starts += not w.ready
            if self._failed_starts >= self.max_failed_starts:
                raise RuntimeError(
                    f"{self._failed_starts} worker processes in a row died while starting "
                    f"({describe_exit(w.proc.exitcode)}); run with --executor serial to see why"
                )
        elif w.task is not None:
            rss = rss_mb(w.proc.pid)
            n, limit = len(w.task.cells), w.task.time_limit(self.limits.time_s)
            if limit is not None and now - w.started > limit:
                self._fail(
                    w,
                    "TimeLimitExceeded",
                    f"the cell ran longer than its time limit of {self.limits.time_s:g} s and was stopped "
                    f"(set with --time-limit){f'; {n} seeds trained together had {n} x the limit' if n > 1 else ''}",
                )
            elif rss is not None and rss > self.memory_mb:
                self._fail(
                    w,
                    "MemoryLimitExceeded",
                    f"the worker's resident memory reached {rss:.0f} MiB, over the memory guard of "
                    f"{self.memory_mb:.0f} MiB, and the cell was stopped (set with --memory-limit-mb)",
                )
        elif not w.ready and now - w.born > self.startup_timeout_s:
            raise RuntimeError(f"a worker process did not start within {self.startup_timeout_s:g} s")

    def _fail(self, w: _Worker, kind: str, message: str) -> None:
        """Kill the worker; every cell of its task that has not reported becomes an error row."""
        task = w.task
        assert task is not None
        wall, rss = time.monotonic() - w.started, rss_mb(w.proc.pid)
        w.kill()
        self._workers.remove(w)
        cost = {"wall_time_s": wall, "peak_memory_mb": rss}
        where = "running the cell (worker process)"
        for cell in task.cells:
            if cell not in w.reported:
                row = error_result(
                    cell, task.budget, task.device, where, kind, message, "", cost, self.config.cache_root
                )
                self._finish(w, row)

    def _shutdown(self) -> None:
        for w in self._workers:
            if w.task is None and w.proc.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        for w in self._workers + self._retiring:
            w.proc.join(timeout=2 if w.task is None else 0)
            w.kill()


class SerialExecutor:
    """Cells one after another in this process: no isolation, no limits (a crash ends the run).

    Like the local executor's workers it runs torch with ``threads`` intra-op threads (default 1; torch's
    own default oversubscribes a shared machine badly), and restores the caller's setting afterwards.
    """

    def __init__(
        self,
        device: str = "cpu",
        cache_root: str | None = None,
        threads: int | None = None,
        plugins: Sequence[str] = (),
        **_: Any,
    ):
        self.cache_root = cache_root
        self.threads = threads or 1
        self.plugins = tuple(plugins)
        self.announce: Callable[[str], None] | None = None

    def run(self, tasks: Sequence[CellTask], on_result: OnResult) -> None:
        import torch

        from benchmark.cache import WeightCache
        from benchmark.registry import load_plugin

        for path in self.plugins:  # in this process: the serial executor isolates nothing (debugging only)
            load_plugin(path)
        cache = WeightCache(self.cache_root) if self.cache_root else None
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        seen: set[str] = set()
        try:
            for t in tasks:
                if (
                    t.cell.toy not in seen
                    and self.announce is not None
                    and not toy_is_cached(t.cell.toy, self.cache_root)
                ):
                    self.announce(f"training {t.cell.toy} (not in the weight cache; {t.cell} builds it)")
                seen.add(t.cell.toy)
                for result in run_methods(t.cells, t.budget, t.device, cache, t.hparams):
                    on_result(result)
        finally:
            torch.set_num_threads(before)


class TimeLimitExceeded(Exception):
    """Raised inside a cell by the in-process alarm when it overruns its time limit."""


def _alarm(signum: int, frame: Any) -> None:
    raise TimeLimitExceeded("the cell ran longer than its time limit and was stopped (set with --time-limit)")


def _ray_cell(task: CellTask, config: WorkerConfig, time_s: float | None) -> list[tuple[bytes, bytes | None]]:
    """A Ray task: the time limit is an alarm started after the worker's start-up, so a busy cluster's
    scheduling and process start-up do not count against the cell; the driver keeps a backstop."""
    init_worker(config)
    armed = False
    if time_s is not None:
        try:
            signal.signal(signal.SIGALRM, _alarm)
            signal.setitimer(signal.ITIMER_REAL, task.time_limit(time_s))
            armed = True
        except (ValueError, AttributeError, OSError):  # not the main thread, or no SIGALRM (Windows)
            pass
    try:
        return [encode_result(r) for r in run_task(task, config)]  # JSON and bytes, decoded as data by the driver
    finally:
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)


class RayExecutor:
    """One Ray task per cell on a Ray cluster (``RAY_ADDRESS``) or a local instance with ``jobs`` CPUs.

    The time limit runs inside the task (an alarm); the driver cancels a task that outlives it by more
    than ``backstop_s`` (a hang in native code that the alarm cannot interrupt)."""

    backstop_s = 300.0
    tick: Callable[[], None] | None = None  # called at every wait (a progress heartbeat between results)

    def __init__(
        self,
        jobs: int | None = None,
        limits: Limits | None = None,
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
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS")
            kw: dict[str, Any] = {"address": address} if address else {"num_cpus": self.jobs or cpu_count()}
            ray.init(include_dashboard=False, log_to_driver=False, **kw)
        refs, files = registry_refs(tasks)
        known = {name for name, _ in self.config.plugin_sources}
        extra = tuple((Path(f).name, Path(f).read_text()) for f in files if Path(f).name not in known)
        config = replace(self.config, refs=refs, plugin_sources=self.config.plugin_sources + extra)
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
            if self.tick is not None:
                self.tick()
            for ref in ready:
                task, t0 = inflight.pop(ref)
                try:
                    results = [decode_result(*r) for r in ray.get(ref)]
                except RayError as exc:
                    results = [
                        error_result(
                            cell,
                            task.budget,
                            task.device,
                            "running the cell (Ray task)",
                            type(exc).__name__,
                            str(exc).strip()[-2000:],
                            "",
                            {"wall_time_s": time.monotonic() - t0},
                            config.cache_root,
                        )
                        for cell in task.cells
                    ]
                for result in results:
                    on_result(result)
            now = time.monotonic()
            for ref, (task, t0) in list(inflight.items()):
                limit = task.time_limit(self.limits.time_s)
                if limit is not None and now - t0 > limit + self.backstop_s:
                    ray.cancel(ref, force=True)
                    del inflight[ref]
                    for cell in task.cells:
                        on_result(
                            error_result(
                                cell,
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
    limits: Limits | None = None,
    plugins: Sequence[str] = (),
    cache_root: str | None = None,
    device: str = "cpu",
    cells_per_worker: int | None = None,
    threads: int | None = None,
    share_tail: bool = True,
):
    """The executor called ``name`` ('local', 'serial' or 'ray')."""
    if name == "local":
        return LocalExecutor(jobs, limits, plugins, cache_root, device, cells_per_worker, threads, share_tail)
    if name == "serial":
        return SerialExecutor(device=device, cache_root=cache_root, threads=threads, plugins=plugins)
    if name == "ray":
        return RayExecutor(jobs, limits, plugins, cache_root, device)
    raise ValueError(f"unknown executor {name!r}; known executors: {', '.join(EXECUTORS)}")
