"""The compute budget: step counts, and the full suite's soft cap in CPU seconds (benchmark/method.py)."""

from __future__ import annotations

import time

import pytest

from benchmark.method import Budget
from benchmark.registry import METHODS
from benchmark.results import Cell
from benchmark.runner import run_cell


def test_the_timer_counts_this_processes_cpu_time() -> None:
    assert not Budget().timer()()  # no cap
    start = Budget.clock()
    patient, hasty = Budget(seconds=0.1).timer(), Budget(seconds=0.01).timer()
    time.sleep(0.2)  # waiting costs no CPU time: another process's load does not use up the cap
    assert not patient()
    while Budget.clock() - start < 0.05:
        pass
    assert hasty()


@pytest.mark.parametrize("method", ["l3d", "apd", "spd"])
def test_iterative_methods_stop_at_the_cap_and_say_so(toy, method: str) -> None:  # noqa: ANN001
    target = toy("tms_5-2").target()
    capped = METHODS.get(method)().decompose(target, Budget(steps=10_000, seconds=0.0), seed=0)
    assert capped.record.stopped_early and capped.record.steps <= 1  # checked before or after the first step
    done = METHODS.get(method)().decompose(target, Budget(steps=2, seconds=1e6), seed=0)
    assert not done.record.stopped_early and done.record.steps == 2


def test_the_result_records_whether_the_cap_stopped_the_cell(toy) -> None:  # noqa: ANN001
    toy("tms_5-2")  # cached weights
    capped = run_cell(Cell("tms_5-2", "l3d", 0), Budget(steps=10_000, seconds=0.0))
    assert capped["status"] == "ok", capped.get("error")
    assert capped["cost"]["stopped_early"] is True and capped["budget"]["seconds"] == 0.0
    assert run_cell(Cell("tms_5-2", "pca", 0), Budget(seconds=0.0))["cost"]["stopped_early"] is False
