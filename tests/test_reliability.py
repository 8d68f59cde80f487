"""Fault injection through the real runner: every failure mode of a submitted method or toy model ends in a
specific error row, the other cells' results stay intact, and the leaderboard marks the failed cells.

The adapters live in ``tests/faults/fault_plugin.py`` and reach the worker processes as a plugin file,
the way a user's method does.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from faults import PLUGIN, isolated_registries
from faults.expected import EXPECTED

from benchmark.cache import CacheWarning, WeightCache, file_sha256
from benchmark.executors import CellTask, Limits, WorkerConfig, run_task
from benchmark.results import Cell, load_results, read_result
from benchmark.runner import plan, run_cell, run_grid

TOY = "tms_5-2"
MEMORY_MB = 1500.0
TIME_S = 6.0


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module", autouse=True)
def fault_adapters():
    """The fault adapters registered in this process too (the in-process tests and the leaderboard need
    their classes); removed again afterwards so that no other test module sees them."""
    from benchmark.registry import load_plugin

    with isolated_registries():
        load_plugin(PLUGIN)
        yield


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory) -> tuple[Path, bytes]:
    """One grid: every fault adapter, two good methods and the broken toy model, on two worker processes.
    The oracle's result is stored before the faulty run starts; its bytes must survive unchanged."""
    root = tmp_path_factory.mktemp("faults")
    run_grid([Cell(TOY, "oracle", 0)], root, executor="serial", log=_quiet)
    oracle_bytes = Cell(TOY, "oracle", 0).path(root).read_bytes()
    cells = [Cell(TOY, m, 0) for m in [*EXPECTED, "oracle", "pca"]]
    cells.append(Cell("fault_toy", "pca", 0))
    run_grid(cells, root, plugins=[str(PLUGIN)], jobs=2, log=_quiet, limits=Limits(time_s=TIME_S, memory_mb=MEMORY_MB))
    # on its own, with a time limit that a loaded machine cannot hit before the memory guard does
    run_grid(
        [Cell(TOY, "fault_memory", 0)],
        root,
        plugins=[str(PLUGIN)],
        jobs=1,
        log=_quiet,
        limits=Limits(time_s=120, memory_mb=MEMORY_MB),
    )
    return root, oracle_bytes


def _row(root: Path, method: str, toy: str = TOY) -> dict:
    return read_result(Cell(toy, method, 0).path(root), root)


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_each_fault_ends_in_its_error_row(fault_run, method: str) -> None:
    root, _ = fault_run
    row = _row(root, method)
    expected = EXPECTED[method]
    if expected is None:
        assert row["status"] == "ok", row["error"]
        return
    kind, fragment, stage = expected
    assert row["status"] == "error"
    assert row["cell"] == {"toy": TOY, "method": method, "seed": 0}
    assert row["error"]["type"] == kind
    assert fragment in row["error"]["message"]
    assert row["error"]["stage"] == stage
    assert row["metrics"] == {}


def test_in_process_errors_carry_the_traceback(fault_run) -> None:
    tb = _row(fault_run[0], "fault_raise")["error"]["traceback"]
    assert "Traceback" in tb and "fault_plugin.py" in tb and "injected failure" in tb


def test_the_memory_guard_stops_a_runaway_allocation(fault_run) -> None:
    row = _row(fault_run[0], "fault_memory")
    assert row["status"] == "error"
    err = row["error"]
    # the RSS watchdog kills the worker, or RLIMIT_DATA makes the allocation fail inside the cell first
    assert err["type"] == "MemoryLimitExceeded" or "memory guard" in err["message"], err
    assert f"{MEMORY_MB:.0f} MiB" in err["message"]


def test_a_hang_is_stopped_near_the_time_limit(fault_run) -> None:
    wall = _row(fault_run[0], "fault_hang")["cost"]["wall_time_s"]
    assert TIME_S <= wall < TIME_S + 5


def test_a_broken_toy_model_is_an_error_row(fault_run) -> None:
    row = _row(fault_run[0], "pca", toy="fault_toy")
    assert row["status"] == "error" and row["error"]["stage"] == "loading the toy model"
    assert "injected failure while training" in row["error"]["message"]


def test_a_record_json_cannot_hold_is_stored_as_text(fault_run) -> None:
    row = _row(fault_run[0], "fault_record")
    assert row["method"]["hparams"]["lr"] == "nan" and "tensor" in row["method"]["hparams"]["w"]
    assert row["cost"]["steps"] is None


def test_the_other_cells_stay_intact(fault_run) -> None:
    root, oracle_bytes = fault_run
    assert Cell(TOY, "oracle", 0).path(root).read_bytes() == oracle_bytes
    pca = _row(root, "pca")
    assert pca["status"] == "ok"
    again = run_cell(Cell(TOY, "pca", 0))
    assert pca["metrics"] == pytest.approx(again["metrics"], abs=1e-12)
    results, problems = load_results(root)
    assert problems == []
    assert len(results) == len(EXPECTED) + 4
    assert not list(root.rglob("*.tmp"))


def test_the_leaderboard_marks_failed_cells(fault_run) -> None:
    from leaderboard.markdown import render_markdown

    text = render_markdown(load_results(fault_run[0])[0])

    def marked(name: str) -> bool:
        rows = [ln for ln in text.splitlines() if re.search(rf"\|\s*{re.escape(name)}\s*\|", ln)]
        assert rows, f"{name} dropped from the leaderboard"
        return any("ERROR" in ln or "\u2717" in ln for ln in rows)

    for method, expected in EXPECTED.items():
        assert marked(method) == (expected is not None), method
    assert marked("pca (ref)")  # its cell on the broken toy model failed


def test_a_resumed_run_keeps_error_rows_unless_asked(fault_run) -> None:
    root, _ = fault_run
    cells = [Cell(TOY, m, 0) for m in EXPECTED]
    assert plan(cells, root, log=_quiet) == []
    failed = sorted(c for c in cells if EXPECTED[c.method] is not None)
    assert plan(cells, root, retry_errors=True, log=_quiet) == failed


def test_a_worker_restores_global_torch_state() -> None:
    config = WorkerConfig()
    (first,) = run_task(CellTask(Cell(TOY, "fault_state", 0)), config)
    assert first["status"] == "ok"
    assert torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()
    assert [r["status"] for r in run_task(CellTask(Cell(TOY, "fault_state_probe", 0)), config)] == ["ok"]


def test_a_truncated_toy_cache_is_rebuilt_not_used(tmp_path: Path) -> None:
    cache = WeightCache(tmp_path / "cache")
    root = tmp_path / "results"
    cell = Cell("block_mlp", "oracle", 0)
    first = run_cell(cell, cache=cache)
    pt = next((tmp_path / "cache").glob("block_mlp*.pt"))
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_grid([cell], root, cache=cache, executor="serial", log=_quiet)
    assert any(issubclass(w.category, CacheWarning) and "invalid" in str(w.message) for w in caught)
    row = read_result(cell.path(root), root)
    assert row["status"] == "ok" and row["toy"]["weights_sha256"] == first["toy"]["weights_sha256"]
    meta = json.loads(pt.with_suffix(".json").read_text())
    assert file_sha256(pt) == meta["file_sha256"]
