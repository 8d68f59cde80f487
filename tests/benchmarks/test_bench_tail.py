"""Three seeds of one cell on two workers: the last round sharing the cores (``share_tail``, the default)
against the third seed waiting for a free worker, side by side in one run (speed issue: 3 seeds in at most
1.5x one seed's wall time).

``pytest tests/benchmarks/test_bench_tail.py --benchmark-enable``. Each round runs APD on TMS 5-2 for
``STEPS`` steps per seed through :func:`benchmark.runner.run_grid` into a fresh results folder, workers and
scoring included; the one-seed case is the reference. On two cores sharing should take about 1.5x the one
seed's time and waiting about 2x.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from benchmark.method import Budget
from benchmark.results import Cell, load_results
from benchmark.runner import run_grid

STEPS = 1500
_round = itertools.count()


def _run(root: Path, seeds: tuple[int, ...], share_tail: bool) -> None:
    out = root / f"round{next(_round)}"
    cells = [Cell("tms_5-2", "apd", s) for s in seeds]
    run_grid(cells, out, jobs=2, budget=Budget(steps=STEPS), share_tail=share_tail, log=lambda _: None)
    rows = load_results(out)[0]
    assert len(rows) == len(seeds) and all(r["status"] == "ok" for r in rows)


@pytest.mark.benchmark(group="three-seeds-two-workers")
@pytest.mark.parametrize(
    ("seeds", "share_tail"), [((0,), True), ((0, 1, 2), True), ((0, 1, 2), False)], ids=["one", "shared", "waiting"]
)
def test_three_seeds_on_two_workers(benchmark, heavy, tmp_path: Path, seeds: tuple[int, ...], share_tail: bool):
    benchmark.pedantic(_run, args=(tmp_path, seeds, share_tail), rounds=3, iterations=1, warmup_rounds=1)
