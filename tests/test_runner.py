"""The runner at scale: interrupted runs resume with only the missing cells, parallel workers give the same
results as one process, suites and budgets, the progress line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faults import PLUGIN, isolated_registries

from benchmark.cache import WeightCache
from benchmark.decomposition import Decomposition, RunRecord
from benchmark.method import Budget, Method
from benchmark.registry import METHODS, load_plugin
from benchmark.results import Cell, load_results, stale_temp_files
from benchmark.runner import Progress, run_grid
from benchmark.suites import SUITES, suite_cells, toy_tiers
from benchmark.toy import Target

REPO = Path(__file__).resolve().parents[1]


def _quiet(_: str) -> None:
    pass


def _stored(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("seed*.json")}


def _start(root: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "benchmark.cli",
        "--plugin",
        str(PLUGIN),
        "run",
        "--suite",
        "full",
        "--toys",
        "tms_5-2,block_mlp",
        "--methods",
        "slow_valid,pca",
        "--results",
        str(root),
        "--jobs",
        "2",
        "--no-leaderboard",
    ]
    # SIGINT at its default in the child, so that Python turns it into KeyboardInterrupt: a shell without job
    # control starts background commands with SIGINT ignored, and the child would inherit that (as when the
    # test suite itself runs in the background)
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _interrupt_after(root: Path, n: int, sig: int) -> tuple[dict[Path, bytes], str]:
    proc = _start(root)
    deadline = time.monotonic() + 240
    while len(_stored(root)) < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()[1]}"
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    return _stored(root), err


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)], ids=["ctrl-c", "crash"]
)
def test_interrupting_a_full_run_then_starting_it_again_runs_only_the_missing_cells(tmp_path: Path, sig) -> None:
    """Ctrl-C (SIGINT: the runner stops its workers) or a crash (SIGKILL: no clean-up at all), then the same
    command again: the finished cells are kept byte for byte and only the missing ones run."""
    root = tmp_path / "results"
    total = 2 * 2 * len(SUITES["full"].seeds)  # toys x methods x seeds
    before, err = _interrupt_after(root, 2, sig)
    if sig == signal.SIGINT:
        assert "interrupted: every finished cell is stored" in err
    done = len(before)
    assert 2 <= done < total
    proc = _start(root)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"{total} cells: {done} already stored, {total - done} to run" in err
    final = _stored(root)
    assert len(final) == total and all(final[p] == b for p, b in before.items())
    results, problems = load_results(root)
    assert problems == [] and all(r["status"] == "ok" for r in results)
    assert not stale_temp_files(root)
    for r in results:  # each result records the suite's budget for its method
        assert r["budget"] == SUITES["full"].budget_for(r["cell"]["method"]).to_dict()


def test_parallel_workers_match_one_process(tmp_path: Path) -> None:
    cells = [Cell("tms_5-2", m, s) for m in ("pca", "random") for s in (0, 1)]
    run_grid(cells, tmp_path / "local", jobs=2, log=_quiet)
    run_grid(cells, tmp_path / "serial", executor="serial", log=_quiet)
    local = {json.dumps(r["cell"]): r["metrics"] for r in load_results(tmp_path / "local")[0]}
    serial = {json.dumps(r["cell"]): r["metrics"] for r in load_results(tmp_path / "serial")[0]}
    assert len(local) == 4 and local.keys() == serial.keys()
    for k in local:  # worker threads may differ from this process's: equal up to float rounding
        assert local[k] == pytest.approx(serial[k], abs=1e-9)


class InTestMethod(Method):
    """Registered inside a test, not at import: the workers learn it from its module:object reference."""

    name = "in_test"
    version = "1"

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        return Decomposition([{n: p.detach().clone()} for n, p in target.params().items()], record=RunRecord(steps=0))


def test_methods_registered_in_the_caller_reach_the_workers(tmp_path: Path) -> None:
    """A class registered by the caller, and a plugin file the caller loaded itself (no ``plugins=``); each
    cell in a fresh worker process (``cells_per_worker=1``)."""
    with isolated_registries():
        METHODS.register("in_test", InTestMethod, replace=True)
        load_plugin(PLUGIN)
        run_grid(
            [Cell("block_mlp", "in_test", 0), Cell("block_mlp", "slow_valid", 0)],
            tmp_path,
            jobs=1,
            log=_quiet,
            cells_per_worker=1,
        )
    assert "in_test" not in METHODS and "slow_valid" not in METHODS
    rows = {r["cell"]["method"]: r for r in load_results(tmp_path)[0]}
    assert rows["in_test"]["status"] == "ok", rows["in_test"]["error"]
    assert rows["in_test"]["method"]["class"].endswith("InTestMethod")
    assert rows["slow_valid"]["status"] == "ok", rows["slow_valid"]["error"]


class SleepMethod(Method):
    """Sleeps a second and a half, writing when it started and ended (into ``$PDBENCH_TEST_TIMES``)."""

    name = "sleeps"
    version = "1"

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        start = time.time()
        time.sleep(1.5)
        (Path(os.environ["PDBENCH_TEST_TIMES"]) / f"{seed}").write_text(f"{start} {time.time()}")
        return Decomposition([{n: p.detach().clone()} for n, p in target.params().items()], record=RunRecord(steps=0))


def test_the_last_round_shares_the_cores(tmp_path: Path, monkeypatch) -> None:
    """Three cells on two workers: the third starts at once on an extra worker rather than after one of the
    first two, so all three run at the same time (each sleeps 1.5 s: the overlap does not hang on CPU speed)."""
    times = tmp_path / "times"
    times.mkdir()
    monkeypatch.setenv("PDBENCH_TEST_TIMES", str(times))
    with isolated_registries():
        METHODS.register("sleeps", SleepMethod, replace=True)
        run_grid([Cell("block_mlp", "sleeps", s) for s in range(3)], tmp_path / "r", jobs=2, log=_quiet)
    assert all(r["status"] == "ok" for r in load_results(tmp_path / "r")[0])
    spans = [tuple(map(float, (times / f"{s}").read_text().split())) for s in range(3)]
    assert max(a for a, _ in spans) < min(b for _, b in spans), spans


class _Busy:
    task = "a task"


def test_extra_workers_only_for_the_last_round(monkeypatch) -> None:
    """The count of workers the local executor wants: ``jobs`` while at least that many tasks wait; then one per
    waiting task beside the busy ones (at most ``jobs - 1`` more), only with ``share_tail`` and free memory."""
    from collections import deque

    from benchmark import executors
    from benchmark.executors import LocalExecutor

    monkeypatch.setattr(executors, "available_memory_mb", lambda: 10.0 * 2**20)

    def wanted(jobs: int, busy: int, waiting: int, share: bool = True) -> int:
        ex = LocalExecutor(jobs=jobs, share_tail=share)
        ex._workers, ex._pending = [_Busy() for _ in range(busy)], deque(range(waiting))
        return ex._workers_wanted()

    assert wanted(2, 0, 3) == 2 and wanted(2, 2, 2) == 2  # a full round waits for free workers
    assert wanted(2, 2, 1) == 3 and wanted(4, 4, 3) == 7 and wanted(4, 4, 1) == 5
    assert wanted(2, 1, 0) == 1 and wanted(2, 0, 1) == 1
    assert wanted(2, 2, 1, share=False) == 2
    monkeypatch.setattr(executors, "available_memory_mb", lambda: 1.0)  # less free than one worker's guard
    assert wanted(2, 2, 1) == 2
    monkeypatch.setattr(executors, "available_memory_mb", lambda: None)  # not known: no extra worker
    assert wanted(2, 2, 1) == 2


def test_suites_cover_what_they_promise() -> None:
    tiers = toy_tiers("reproduction")  # the papers' toys; rotated variants are another track
    quick, suite = suite_cells("quick")
    assert suite.seeds == (0,)
    assert {c.toy for c in quick} == {t for t, tier in tiers.items() if tier <= 1}
    assert {c.method for c in quick} == set(METHODS.names())
    full, suite = suite_cells("full")
    board_toys = {t for t, tier in tiers.items() if tier != 4}  # tier 4 (contested) is its own suite
    assert 5 in {tiers[t] for t in board_toys}  # the transformers
    assert len(suite.seeds) >= 3 and {c.toy for c in full} == board_toys
    assert len(full) == len(board_toys) * len(METHODS.names()) * len(suite.seeds)
    assert suite.budget.scale == 1.0 and suite.budget.seconds is not None  # default steps, capped in CPU time
    contested, suite = suite_cells("contested")
    assert {c.toy for c in contested} == {t for t, tier in tiers.items() if tier == 4}
    assert suite.budget == SUITES["full"].budget and len(suite.seeds) == 3  # tier 4 as full runs the others
    paper, suite = suite_cells("paper")
    assert set(paper) == set(full) | set(contested) and suite.budget == Budget(scale=1.0)  # every tier, uncapped
    quick_budget = SUITES["quick"].budget
    assert quick_budget.seconds is not None  # a smoke run: capped per cell
    assert SUITES["quick"].budget_for("pca", steps=7) == Budget(
        steps=7, scale=quick_budget.scale, seconds=quick_budget.seconds
    )
    headline, suite = suite_cells("headline")
    models = set(toy_tiers("headline"))
    assert models and {c.toy for c in headline} == {f"{t}@{i}" for t in models for i in range(suite.instances)}
    assert suite.instances >= 3 and suite.budget == Budget(scale=1.0)  # 3 instances, uncapped
    assert len(headline) == len(models) * suite.instances * len(METHODS.names()) * len(suite.seeds)
    with pytest.raises(
        KeyError, match="unknown suite 'huge'; known suites: quick, full, contested, headline, budget, paper"
    ):
        suite_cells("huge")


def test_the_progress_line_counts_and_estimates() -> None:
    lines: list[str] = []
    bar = Progress(4, lines.append)
    ok = {
        "cell": {"toy": "t", "method": "m", "seed": 0},
        "status": "ok",
        "metrics": {"hungarian": 0.5},
        "headline": "hungarian",
        "cost": {"wall_time_s": 1.0},
    }
    err = {**ok, "status": "error", "error": {"stage": "decomposing", "type": "ValueError", "message": "bad\nmore"}}
    bar.update(ok)
    bar.t0 -= 10  # pretend 10 s have passed
    bar.update(err)
    assert "2/4 (1 errors)" in lines[-1] and "elapsed 0m10s, ~0m10s left" in lines[-1]
    assert "t x m x seed 0: ERROR in decomposing: ValueError: bad" in lines[-1] and "more" not in lines[-1]
    assert "hungarian=0.500" in lines[0]


def test_the_estimate_weighs_cells_by_their_expected_cost(tmp_path) -> None:
    from benchmark.runner import DEFAULT_CELL_S, expected_seconds

    cells = [Cell("t", "cheap", 0), Cell("t", "cheap", 1), Cell("t", "slow", 0)]
    lines: list[str] = []
    bar = Progress(3, lines.append, costs=dict(zip(cells, [1.0, 1.0, 8.0], strict=True)))
    done = {"status": "ok", "metrics": {}, "headline": "hungarian", "cost": {}}
    bar.update({**done, "cell": {"toy": "t", "method": "cheap", "seed": 0}})
    bar.t0 -= 2  # the two cheap cells took 2 s: the slow one, expected to cost 8x one of them, about 8 s more
    bar.update({**done, "cell": {"toy": "t", "method": "cheap", "seed": 1}})
    assert "~0m08s left" in lines[-1], lines[-1]  # counting cells alone would say ~0m01s
    # expected costs come from stored results of the same (toy, method), else of the method, else a default
    for seed, wall in ((0, 3.0), (1, 5.0)):
        path = tmp_path / "t" / "cheap" / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"cost": {"wall_time_s": wall}}))
    asked = [Cell("t", "cheap", 2), Cell("u", "cheap", 0), Cell("t", "new", 0)]
    assert [expected_seconds(asked, tmp_path, None)[c] for c in asked] == [4.0, 4.0, DEFAULT_CELL_S]
    # a fresh folder falls back on a committed leaderboard's costs, its own results first
    board = tmp_path / "board"
    for toy, method, wall in (("t", "new", 7.0), ("t", "cheap", 100.0)):
        path = board / toy / method / "seed0.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"cost": {"wall_time_s": wall}}))
    assert [expected_seconds(asked, tmp_path, board)[c] for c in asked] == [4.0, 4.0, 7.0]
    assert expected_seconds([Cell("t", "new", 0)], tmp_path / "fresh", board)[Cell("t", "new", 0)] == 7.0


def test_expected_costs_are_rescaled_to_the_runs_budget(tmp_path) -> None:
    """A quick run (10% of the steps, 12 CPU-s cap) estimated from the full suite's stored walls: an SPD cell
    that took 60 s for 3,000 steps is expected to take 6 s, one that took 300 s is capped at 12, an explicit
    step count scales per step, and a method without steps (PCA) costs what it cost."""
    from benchmark.runner import expected_seconds

    for toy, method, wall, steps in (("a", "spd", 60.0, 3000), ("b", "spd", 300.0, 3000), ("a", "pca", 0.5, 0)):
        path = tmp_path / toy / method / "seed0.json"
        path.parent.mkdir(parents=True)
        budget = {"scale": 1.0, "seconds": 120.0, "steps": None}
        path.write_text(json.dumps({"cost": {"wall_time_s": wall, "steps": steps}, "budget": budget}))
    cells = [Cell("a", "spd", 1), Cell("b", "spd", 1), Cell("a", "pca", 1)]
    quick = Budget(scale=0.1, seconds=12.0)
    assert list(expected_seconds(cells, tmp_path, None, lambda m: quick).values()) == [6.0, 12.0, 0.5]
    assert list(expected_seconds(cells, tmp_path, None).values()) == [60.0, 300.0, 0.5]  # as stored
    steps = expected_seconds(cells[:1], tmp_path, None, lambda m: Budget(steps=1500))
    assert steps[cells[0]] == 30.0


def test_nearly_free_first_cells_do_not_make_the_estimate_explode() -> None:
    """The headline suite runs its cheapest cells first (``cheap_first``): two baselines expected to cost 0.01 s
    each finish after 3 s of start-up, before two 100 s cells. Elapsed / expected cost done alone said 4 hours
    (a real run's first lines said ~44h left for a 40-minute suite); the pace starts at 1 / jobs instead."""
    cells = [Cell("t", "random", 0), Cell("t", "whole", 0), Cell("t", "apd", 0), Cell("t", "spd", 0)]
    costs = dict(zip(cells, [0.01, 0.01, 100.0, 100.0], strict=True))
    lines: list[str] = []
    bar = Progress(4, lines.append, costs=costs, jobs=2)
    assert abs(bar.eta() - 100.0) < 1.0  # before any cell: 200 expected seconds on 2 workers
    done = {"status": "ok", "metrics": {}, "headline": "hungarian", "cost": {}}
    bar.t0 -= 3.0
    for method in ("random", "whole"):
        bar.update({**done, "cell": {"toy": "t", "method": method, "seed": 0}})
    assert 100.0 < bar.eta() < 220.0, bar.eta()  # start-up counts, but not as hours
    bar.update({**done, "cell": {"toy": "t", "method": "apd", "seed": 0}})
    bar.t0 -= 400.0  # the apd cell took 4x its expected cost: the measured pace now dominates
    assert 250.0 < bar.eta() < 400.0, bar.eta()


def test_training_a_toy_model_is_announced(tmp_path) -> None:
    lines: list[str] = []
    cache = WeightCache(tmp_path / "cache")
    run_grid([Cell("block_mlp", "whole", 0)], tmp_path / "results", jobs=1, cache=cache, log=lines.append)
    assert any(line.startswith("training block_mlp (not in the weight cache") for line in lines), lines
    lines.clear()
    run_grid([Cell("block_mlp", "whole", 1)], tmp_path / "results", jobs=1, cache=cache, log=lines.append)
    assert not any(line.startswith("training") for line in lines)  # cached now: nothing to announce


def test_a_long_wait_between_results_writes_a_heartbeat() -> None:
    from benchmark.runner import HEARTBEAT_S

    lines: list[str] = []
    bar = Progress(2, lines.append)
    bar.tick()
    assert lines == []  # nothing yet: the run has just started
    bar.last_output -= HEARTBEAT_S
    bar.tick()
    bar.tick()  # the line just written resets the wait
    assert len(lines) == 1 and lines[0].startswith("[....") and lines[0].endswith("| still running"), lines


def test_on_a_terminal_tqdm_draws_the_bar() -> None:
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    bar = Progress(2, None, stream=out, costs={Cell("t", "m", 0): 1.0, Cell("t", "m", 1): 3.0})
    bar.note("training t (not in the weight cache)")
    done = {"status": "ok", "metrics": {}, "headline": "hungarian", "cost": {}}
    for seed in (0, 1):
        bar.update({**done, "cell": {"toy": "t", "method": "m", "seed": seed}})
    text = out.getvalue()
    assert "training t (not in the weight cache)" in text and "2/2" in text and "0 errors" in text


def test_toy_models_to_train_start_before_the_cells_of_built_ones() -> None:
    """The local executor hands out the first cell of every toy model still to train before any other cell, in
    the tasks' order; the other cells of a toy model wait for its build."""
    from collections import deque

    from benchmark.executors import CellTask, LocalExecutor

    ex = LocalExecutor(jobs=2)
    tasks = [CellTask(Cell(toy, m, 0), Budget()) for toy in ("a", "b", "c") for m in ("whole", "pca")]
    ex._pending, ex._built, ex._building, ex._to_train = deque(tasks), {"a"}, set(), {"b", "c"}
    got = [ex._next_task().cell for _ in range(4)]
    assert got == [Cell("b", "whole", 0), Cell("c", "whole", 0), Cell("a", "whole", 0), Cell("a", "pca", 0)]
    assert ex._next_task() is None  # b and c are still building: their other cells wait
    ex._building.discard("b")
    ex._built.add("b")
    assert ex._next_task().cell == Cell("b", "pca", 0)


def test_reference_rows_build_a_toy_model_first() -> None:
    """A toy model's first cell trains its weights while other workers wait: it should be a cheap one."""
    from benchmark.runner import cheap_first

    cells = [
        Cell("a", "apd", 0),
        Cell("a", "whole", 0),
        Cell("b", "spd", 0),
        Cell("b", "oracle", 0),
        Cell("a", "pca", 1),
    ]
    got = cheap_first(cells)
    assert got == [
        Cell("a", "whole", 0),
        Cell("a", "pca", 1),
        Cell("a", "apd", 0),
        Cell("b", "oracle", 0),
        Cell("b", "spd", 0),
    ]


def test_the_budget_suite_is_the_headline_cells_capped() -> None:
    headline, _ = suite_cells("headline", methods=["pca"])
    budget, suite = suite_cells("budget", methods=["pca"])
    assert {c.toy for c in budget} == {c.toy for c in headline} and suite.track == "headline"
    assert suite.budget == SUITES["full"].budget  # the full suite's CPU-time cap
