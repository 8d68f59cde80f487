"""Running a grid of cells: plan what is left, run the methods, score and store each result.

``run_grid`` runs many cells through an executor (:mod:`benchmark.executors`: worker processes by default,
each cell under a time limit and a memory guard, or a Ray cluster). Workers run the methods
(:func:`benchmark.cell.run_method`) and send back each decomposition as data; this process scores it
(:func:`benchmark.cell.score_result`) without ever importing method code, writes the decomposition and
then the result atomically, and skips cells already stored, so an interrupted run resumes where it
stopped. One writer per results folder (:mod:`benchmark.lock`).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmark.cache import WeightCache, atomic_write_bytes
from benchmark.cell import PAYLOAD, error_result, run_cell, score_result
from benchmark.executors import CellTask, Limits, cpu_count, make_executor
from benchmark.lock import ResultsLock
from benchmark.method import Budget
from benchmark.registry import METHODS, TOY_MODELS, load_plugin
from benchmark.results import (
    Cell,
    ResultError,
    ResultRecord,
    read_result,
    remove_stale_temp_files,
    set_aside,
    stored_status,
    write_result,
)
from benchmark.scoring import HEADLINE
from benchmark.toy import ToyModel, load_toy

__all__ = ["RunOptions", "run_grid", "run_cell", "plan", "Progress", "summarise", "stderr_log"]

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    """The CLI's log: messages on stderr; with it, the progress bar redraws one line on a terminal."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RunOptions:
    """How ``run_grid`` runs its cells.

    ``executor``: 'local' (worker processes, the default), 'serial' (in this process, no isolation) or
    'ray'. ``jobs``: parallel workers (default: one per CPU core). ``limits``: time limit and memory guard.
    ``budgets``: per-method budgets that override ``budget``. ``hparams``: per-method hyperparameter
    overrides (recorded in each result). ``cells_per_worker``: restart a local worker after that many cells
    (1: a fresh process per cell). ``threads``: torch intra-op threads per worker (default 1). ``seed_groups``:
    a (toy model, method)'s seeds run as one task, trained together (:func:`seed_tasks`): None (default) for the
    methods whose groups pay (``Method.groups_by_default``), True for every method that can, False for none.
    ``share_tail``: the local executor's last round shares the cores (:class:`~benchmark.executors.LocalExecutor`).
    ``plugins``:
    files that register methods or toy models, imported by the workers (and by this process only for a toy
    model it does not know otherwise)."""

    budget: Budget = field(default_factory=Budget)
    device: str = "cpu"
    cache: WeightCache | None = None
    plugins: tuple[str, ...] = ()
    rerun: bool = False
    retry_errors: bool = False
    executor: str = "local"
    jobs: int | None = None
    limits: Limits = field(default_factory=Limits)
    budgets: Mapping[str, Budget] = field(default_factory=dict)
    hparams: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    cells_per_worker: int | None = None
    threads: int | None = None
    progress: bool = True
    seed_groups: bool | None = None
    share_tail: bool = True


HEARTBEAT_S = 60.0  # the progress line is written again after this long without any other output
DEFAULT_CELL_S = 20.0  # a cell's expected wall time when nothing better is known


#: The leaderboard committed with this checkout, where there is one: a fresh results folder's cells are
#: estimated from its stored costs (same toy model and method) before falling back to ``DEFAULT_CELL_S``.
COMMITTED_RESULTS = Path(__file__).resolve().parents[1] / "leaderboard" / "results"


@dataclass(frozen=True)
class _StoredCost:
    """One stored result's decomposition wall time, with the steps it ran and the budget it ran under."""

    wall: float
    steps: int
    scale: float
    explicit_steps: bool

    def under(self, budget: Budget | None) -> float:
        """The wall time expected under ``budget``: per-step time x the steps it asks (the stored run's
        default steps x its scale, or its explicit steps), at most its CPU cap. A method without steps (PCA,
        ICA) costs what it cost."""
        if budget is None or self.steps <= 0:
            return self.wall
        default = None if self.explicit_steps or self.scale <= 0 else self.steps / self.scale
        steps = budget.steps if budget.steps is not None else default * budget.scale if default else self.steps
        expected = self.wall / self.steps * steps
        return min(expected, budget.seconds) if budget.seconds is not None else expected


def _stored_costs(
    root: Path, methods: set[str]
) -> tuple[dict[tuple[str, str], list[_StoredCost]], dict[str, list[_StoredCost]]]:
    """The stored results' costs under ``root``, by (toy model, method) and by method."""
    by_pair: dict[tuple[str, str], list[_StoredCost]] = {}
    by_method: dict[str, list[_StoredCost]] = {}
    for path in root.glob("*/*/seed*.json") if root.is_dir() else []:
        method = path.parent.name
        if method not in methods:
            continue
        try:
            row = json.loads(path.read_text())
            cost, budget = row.get("cost", {}), row.get("budget") or {}
            wall, steps, scale = cost.get("wall_time_s"), cost.get("steps") or 0, budget.get("scale", 1.0)
            stored = _StoredCost(float(wall), int(steps), float(scale), budget.get("steps") is not None)
        except (OSError, ValueError, AttributeError, TypeError):
            continue
        if stored.wall >= 0:
            by_pair.setdefault((path.parent.parent.name, method), []).append(stored)
            by_method.setdefault(method, []).append(stored)
    return by_pair, by_method


def expected_seconds(
    cells: Sequence[Cell],
    results_dir: Path,
    committed: Path | None = COMMITTED_RESULTS,
    budget_for: Callable[[str], Budget] | None = None,
) -> dict[Cell, float]:
    """Each cell's expected wall time, for the progress estimate: the median over stored results of the
    same (toy model, method) in ``results_dir`` (other seeds, or an earlier run), else in the ``committed``
    leaderboard, else of the same method on any toy model in either, else ``DEFAULT_CELL_S``. With
    ``budget_for`` (a method's budget in this run), each stored time is rescaled to that budget's steps and
    cap (:meth:`_StoredCost.under`): a quick run is not estimated from the full suite's walls."""
    own = _stored_costs(results_dir, {c.method for c in cells})
    missing = {c.method for c in cells if (c.toy, c.method) not in own[0]}  # only these read the committed board
    other = committed is not None and committed.resolve() != Path(results_dir).resolve()
    board = _stored_costs(committed, missing) if missing and other else ({}, {})
    out = {}
    for c in cells:
        pair, method = (c.toy, c.method), c.method
        known = own[0].get(pair) or board[0].get(pair) or own[1].get(method) or board[1].get(method)
        budget = budget_for(method) if budget_for is not None else None
        out[c] = statistics.median(k.under(budget) for k in known) if known else DEFAULT_CELL_S
    return out


class Progress:
    """Progress on stderr: done/total, errors, elapsed time and an estimate of the rest.

    The estimate weighs each cell by its expected cost (``costs``, seconds; :func:`expected_seconds`), so a
    grid whose cheap cells finish first does not promise too little time left: remaining expected cost x the
    pace, wall seconds per expected second. The pace starts at ``1 / jobs`` (``jobs`` cells at a time) and moves
    to the measured one, elapsed / expected cost of the cells done, as that cost passes ``PRIOR_S``: the first
    cells, nearly free, do not turn a second of start-up into hours. On a terminal the bar is drawn by tqdm;
    otherwise (a log file, a test) each update is one line through ``log``. Notes (a toy model being trained)
    are announced between the updates."""

    PRIOR_S = 60.0  # expected seconds of finished cells at which the measured pace and the prior weigh the same

    def __init__(
        self,
        total: int,
        log: Log | None = None,
        stream=None,
        costs: Mapping[Cell, float] | None = None,
        jobs: int = 1,
    ):
        self.total, self.done, self.errors = total, 0, 0
        self.prior_pace = 1.0 / max(1, jobs)
        self.costs = dict(costs or {})  # a cell it does not name counts as an average one
        self.total_cost = (sum(self.costs.values()) if self.costs else total) or 1.0
        self.done_cost = 0.0
        self.t0 = self.last_output = time.perf_counter()
        self.stream = stream if stream is not None else sys.stderr
        self.tty = log in (None, stderr_log) and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log = None if self.tty else log
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=self.stream, unit="cell", dynamic_ncols=True, smoothing=0)

    @staticmethod
    def _fmt(seconds: float) -> str:
        s = int(round(seconds))
        return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"

    def eta(self) -> float | None:
        """Seconds left: the expected cost still to run, at the pace of the cells done so far (without
        expected costs, each cell counts as one and there is no estimate before the first is done)."""
        elapsed = time.perf_counter() - self.t0
        left = max(0.0, self.total_cost - self.done_cost)
        if self.costs:
            return left * (elapsed + self.PRIOR_S * self.prior_pace) / (self.done_cost + self.PRIOR_S)
        return elapsed / self.done_cost * left if self.done_cost > 0 else None

    def line(self, last: str = "") -> str:
        elapsed = time.perf_counter() - self.t0
        width = 20
        filled = int(width * self.done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        eta = self.eta()
        eta_s = "?" if eta is None else self._fmt(eta)
        return (
            f"[{bar}] {self.done}/{self.total} ({self.errors} errors) elapsed {self._fmt(elapsed)}, "
            f"~{eta_s} left" + (f" | {last}" if last else "")
        )

    def tick(self) -> None:
        """A heartbeat between results: after ``HEARTBEAT_S`` with nothing written, the line again with the
        time elapsed (a long cell, a toy model training), so that a run never goes silent."""
        if time.perf_counter() - self.last_output >= HEARTBEAT_S:
            self.emit(self.line("still running"))

    def note(self, text: str) -> None:
        """An announcement between updates (it does not count as a finished cell)."""
        self.last_output = time.perf_counter()
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        elif self.log is not None:
            self.log(text)
        else:
            print(text, file=self.stream, flush=True)

    def update(self, result: dict[str, Any]) -> None:
        self.done += 1
        cell = Cell(**result["cell"])
        self.done_cost += self.costs.get(cell, self.total_cost / max(1, self.total))
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
        self.last_output = time.perf_counter()
        if self.bar is not None:
            eta = self.eta()
            self.bar.n = self.done
            self.bar.set_postfix_str(
                f"{self.errors} errors, ~{'?' if eta is None else self._fmt(eta)} left | {text.split(' | ')[-1][:120]}"
            )
            if self.done == self.total:
                self.bar.close()
        elif self.log is not None:
            self.log(text)
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


def cheap_first(cells: list[Cell]) -> list[Cell]:
    """The cells in their order, except that within each toy model the reference rows come first. The first
    cell of a toy model whose weights are not cached trains them while the other workers wait for that toy
    (``LocalExecutor``); a cheap cell keeps that wait to the training itself: on a fresh cache the quick
    suite's ``tms_40-10`` otherwise trained behind APD's 98-second cell while the other worker idled."""
    first: dict[str, int] = {}
    for c in cells:
        first.setdefault(c.toy, len(first))

    def is_reference(method: str) -> bool:
        cls = METHODS.builtin(method) if ":" not in method else None
        return bool(getattr(cls, "reference_row", False))

    ref = {m: is_reference(m) for m in {c.method for c in cells}}
    return [c for _, c in sorted(enumerate(cells), key=lambda ic: (first[ic[1].toy], not ref[ic[1].method], ic[0]))]


def seed_tasks(cells: list[Cell], o: RunOptions) -> list[CellTask]:
    """The tasks for ``cells`` in their order. The seeds of one (toy model, method) form one task where the
    method trains seeds together (``Method.trains_seeds_together``, built-in methods only), its budget has no
    time cap (a capped cell's steps depend on the time it gets) and ``o.seed_groups`` asks for it: True, or
    None (the default) where the method's groups pay (``Method.groups_by_default``)."""

    def together(method: str) -> bool:
        cls = METHODS.builtin(method) if ":" not in method else None
        budget = o.budgets.get(method, o.budget)
        asked = o.seed_groups if o.seed_groups is not None else bool(getattr(cls, "groups_by_default", False))
        return asked and bool(getattr(cls, "trains_seeds_together", False)) and budget.seconds is None

    grouped = {m: together(m) for m in {c.method for c in cells}}
    groups: dict[tuple[Any, ...], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.toy, c.method) if grouped[c.method] else (c.toy, c.method, c.seed), []).append(c)
    return [
        CellTask(
            g[0],
            o.budgets.get(g[0].method, o.budget),
            o.device,
            dict(o.hparams.get(g[0].method, {})),
            tuple(c.seed for c in g[1:]),
        )
        for g in groups.values()
    ]


def run_grid(
    cells: Iterable[Cell],
    results_dir: Path,
    options: RunOptions | None = None,
    *,
    log: Log = print,
    **overrides: Any,
) -> list[Path]:
    """Run every cell not already stored; write each result as it arrives; return the paths written.

    ``options`` (a :class:`RunOptions`) or its fields as keyword arguments. Holds the results folder's lock
    for the whole run (a second writer is refused with the holder's name)."""
    options = replace(options or RunOptions(), **_normalise(overrides))
    results_dir = Path(results_dir)
    with ResultsLock(results_dir):
        return _run_locked(list(cells), results_dir, options, log)


def _normalise(kw: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in kw.items() if v is not None or k in ("jobs", "threads", "cells_per_worker", "cache")}
    if "plugins" in out:
        out["plugins"] = tuple(str(Path(p).expanduser().resolve()) for p in out["plugins"])
    for key in ("budgets", "hparams"):
        if key in out and out[key] is None:
            out[key] = {}
    if out.get("limits") is None:
        out.pop("limits", None)
    if out.get("budget") is None:
        out.pop("budget", None)
    return out


def _run_locked(cells: list[Cell], results_dir: Path, o: RunOptions, log: Log) -> list[Path]:
    for p in o.plugins:
        if not Path(p).is_file():
            raise FileNotFoundError(f"plugin file {p} does not exist")
    removed = remove_stale_temp_files(results_dir)
    if removed:
        log(f"removed {removed} temporary file(s) left by a writer that died")
    todo = plan(cells, results_dir, o.rerun, o.retry_errors, log)
    if not todo:
        return []
    todo = cheap_first(todo)
    tasks = seed_tasks(todo, o)
    ex = make_executor(
        o.executor,
        jobs=o.jobs,
        limits=o.limits,
        plugins=list(o.plugins),
        cache_root=str(o.cache.root) if o.cache is not None else None,
        device=o.device,
        cells_per_worker=o.cells_per_worker,
        threads=o.threads,
        share_tail=o.share_tail,
    )
    bar = Progress(
        len(todo),
        log,
        costs=expected_seconds(todo, results_dir, budget_for=lambda m: o.budgets.get(m, o.budget)),
        jobs=o.jobs or cpu_count(),
    )
    if hasattr(ex, "announce"):
        ex.announce = bar.note
    if hasattr(ex, "tick"):
        ex.tick = bar.tick
    written: list[Path] = []
    scorer = _Scorer(o, log)

    def finish(result: dict[str, Any]) -> None:
        cell = Cell(**result["cell"])
        result = scorer.score(result)
        try:
            path = store(results_dir, result, o.rerun, log)
        except (ResultError, TypeError, ValueError, OSError) as exc:  # a result that cannot be stored honestly
            row = error_result(
                cell, o.budget, o.device, "storing the result", type(exc).__name__, str(exc), traceback.format_exc()
            )
            path, result = store(results_dir, row, o.rerun, log), row
        if path is not None:
            written.append(path)
        if o.progress:
            bar.update(result)

    if o.progress:
        grouped = sum(len(t.cells) for t in tasks if t.seeds)
        together = f" ({grouped} of them in groups of seeds trained together)" if grouped else ""
        bar.emit(bar.line(f"running {len(todo)} cells{together} with the {o.executor} executor"))
    if o.executor == "serial":  # the method runs in this process: never score beside it
        ex.run(tasks, finish)
        return written
    # Scoring runs on one thread of this process while the executor keeps its workers busy (scoring a large
    # decomposition takes seconds); results are stored in the order they arrive.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdbench-scorer") as pool:
        futures: list[Future[None]] = []
        try:
            ex.run(tasks, lambda result: futures.append(pool.submit(finish, result)))
        finally:
            for f in futures:
                f.result()  # every finished cell is stored before returning, even on Ctrl-C
    return written


class _Scorer:
    """Scores results in this process, keeping one built toy model per name."""

    def __init__(self, options: RunOptions, log: Log):
        self.options, self.log = options, log
        self.toys: dict[str, ToyModel] = {}

    def toy(self, name: str) -> ToyModel:
        if name not in self.toys:
            if name not in TOY_MODELS and self.options.plugins:
                self.log(f"toy model {name!r} comes from a plugin file: loading the plugins to score it")
                for p in self.options.plugins:
                    load_plugin(p)
            self.toys[name] = load_toy(name, self.options.cache)
        return self.toys[name]

    def score(self, result: dict[str, Any]) -> dict[str, Any]:
        if result.get("status") != "ok":
            return score_result(result)
        try:
            toy = self.toy(result["cell"]["toy"])
        except Exception as exc:  # noqa: BLE001 - becomes the cell's error row
            result.pop(PAYLOAD, None)
            cell = Cell(**result["cell"])
            return error_result(
                cell,
                self.options.budget,
                self.options.device,
                "loading the toy model to score",
                type(exc).__name__,
                str(exc),
                traceback.format_exc(),
            )
        return score_result(result, toy)


def store(root: Path, result: dict[str, Any], rerun: bool, log: Log = print) -> Path | None:
    """Write a scored result (and its decomposition, first) into ``root``. An error row never replaces a
    stored ok row unless ``rerun``; returns the result's path, or None where nothing was written."""
    cell = Cell(**result["cell"])
    payload = result.pop(PAYLOAD, None)
    if result["status"] != "ok" and not rerun and stored_status(root, cell) == "ok":
        log(f"warning: {cell} failed ({result['error']['type']}); the stored ok result is kept (--rerun replaces it)")
        return None
    record = ResultRecord.from_dict(result, str(cell))  # validated and typed before anything is written
    if record.ok:
        if not isinstance(payload, bytes):
            raise ResultError(f"{cell}: an ok result without its stored decomposition")
        atomic_write_bytes(cell.decomposition_path(root), payload)
    path = write_result(root, record)
    if result["status"] != "ok":
        cell.decomposition_path(root).unlink(missing_ok=True)
    return path


def summarise(paths: Iterable[Path]) -> dict[str, int]:
    """Counts of ok and error rows among the written files."""
    counts = {"ok": 0, "error": 0}
    for p in paths:
        counts[json.loads(Path(p).read_text())["status"]] += 1
    return counts
