"""The compute budget: step counts, and the full suite's soft cap in CPU seconds (benchmark/method.py)."""

from __future__ import annotations

import time

import pytest

from benchmark.method import Budget
from benchmark.results import Cell
from benchmark.runner import run_cell
from methods.l3d import L3D


def test_out_of_time_counts_this_processes_cpu_time() -> None:
    assert not Budget().out_of_time(Budget.clock())  # no cap
    start = Budget.clock()
    time.sleep(0.2)  # waiting costs no CPU time: another process's load does not use up the cap
    assert not Budget(seconds=0.1).out_of_time(start)
    while Budget.clock() - start < 0.05:
        pass
    assert Budget(seconds=0.01).out_of_time(start)


@pytest.mark.parametrize("budget, stopped", [(Budget(steps=3), False), (Budget(steps=10_000, seconds=0.0), True)])
def test_a_capped_method_stops_early_and_says_so(toy, budget: Budget, stopped: bool) -> None:  # noqa: ANN001
    dec = L3D().decompose(toy("tms_5-2").target(), budget, seed=0)
    assert dec.record.stopped_early is stopped
    assert dec.record.steps == (0 if stopped else 3)


def test_the_result_records_whether_the_cap_stopped_the_cell(toy) -> None:  # noqa: ANN001
    toy("tms_5-2")  # cached weights
    capped = run_cell(Cell("tms_5-2", "l3d", 0), Budget(steps=10_000, seconds=0.0))
    assert capped["status"] == "ok", capped.get("error")
    assert capped["cost"]["stopped_early"] is True and capped["budget"]["seconds"] == 0.0
    assert run_cell(Cell("tms_5-2", "pca", 0), Budget(seconds=0.0))["cost"]["stopped_early"] is False


def test_apd_honours_the_cap(toy) -> None:  # noqa: ANN001
    from methods.apd import APD

    dec = APD(log_every=0).decompose(toy("tms_5-2").target(), Budget(steps=10_000, seconds=0.0), seed=0)
    assert dec.record.stopped_early and dec.record.steps == 1
    assert not APD(log_every=0).decompose(toy("tms_5-2").target(), Budget(steps=2), seed=0).record.stopped_early
