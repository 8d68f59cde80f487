"""Three seeds of one cell on two workers against one seed (speed issue: 3 seeds of APD and of SPD on TMS 5-2
in at most 1.5x one seed's wall time), side by side in one run.

``pytest tests/benchmarks/test_bench_tail.py --benchmark-enable``. Each round runs its cells through
:func:`benchmark.runner.run_grid` into a fresh results folder, workers and scoring included, and the one-seed
case of its group is the reference:

- ``three-seeds-two-workers``: APD for ``STEPS`` steps per seed, the last round sharing the cores
  (``share_tail``, the default) against the third seed waiting for a free worker. On two cores sharing should
  take about 1.5x the one seed's time and waiting about 2x.
- ``three-seeds-preset``: APD and SPD at their own TMS 5-2 defaults (the cells the reproduction track stores),
  sharing the cores: three compute-bound runs on two cores cannot take less than 1.5x one run, so the ratio
  measures how close the runner comes to that bound (the runs slow each other through the memory they share).
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


def _run(root: Path, seeds: tuple[int, ...], share_tail: bool, method: str = "apd", steps: int | None = STEPS) -> None:
    out = root / f"round{next(_round)}"
    cells = [Cell("tms_5-2", method, s) for s in seeds]
    run_grid(cells, out, jobs=2, budget=Budget(steps=steps), share_tail=share_tail, log=lambda _: None)
    rows = load_results(out)[0]
    assert len(rows) == len(seeds) and all(r["status"] == "ok" for r in rows)


@pytest.mark.benchmark(group="three-seeds-two-workers")
@pytest.mark.parametrize(
    ("seeds", "share_tail"), [((0,), True), ((0, 1, 2), True), ((0, 1, 2), False)], ids=["one", "shared", "waiting"]
)
def test_three_seeds_on_two_workers(benchmark, heavy, tmp_path: Path, seeds: tuple[int, ...], share_tail: bool):
    benchmark.pedantic(_run, args=(tmp_path, seeds, share_tail), rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="three-seeds-preset")
@pytest.mark.parametrize("method", ["apd", "spd"])
@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)], ids=["one", "three"])
def test_three_seeds_at_the_preset(benchmark, heavy, tmp_path: Path, method: str, seeds: tuple[int, ...]):
    benchmark.pedantic(_run, args=(tmp_path, seeds, True, method, None), rounds=2, iterations=1)
