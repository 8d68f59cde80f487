"""The floor: one optimisation step of each training method against one forward + backward of the target.

For tiny toys a step's time is mostly Python and kernel-launch overhead, not arithmetic; the ratio says how
far a method's step is from the cheapest thing it could do on the same batch, one pass of the target model
forward and back (speed issue). pytest-benchmark times the floor itself; the step is timed as the difference
of two whole runs of the method (``LONG`` and ``SHORT`` steps, so set-up and export cancel; each the fastest
of ``ROUNDS``), after a first run that is not timed (the first run in a process pays torch's one-off costs:
2.2 s of APD's first 10 steps on TMS 5-2, which made an earlier version of this benchmark report 47 ms per
step for 7), and the ratio is
stored with the benchmark (``extra_info``: ``step_s``, ``floor_s``, ``step_over_floor``; printed with
``-s``, kept by ``--benchmark-json``). A report, not an assert.

Run: ``pytest tests/benchmarks/test_bench_floor.py --benchmark-enable -s`` (one thread, as the runner uses).
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from benchmark.method import Budget
from benchmark.registry import METHODS

SHORT, LONG = 10, 110  # steps of the two runs whose difference times LONG - SHORT steps
ROUNDS = 3  # each run's time is the fastest of this many (a shared machine's noise only adds time)
CASES = [(toy, method) for toy in ("tms_5-2", "tms_40-10") for method in ("apd", "spd", "l3d", "vpd", "spd-main")]


def fwd_bwd(target, x: torch.Tensor) -> None:
    """One forward and backward pass of the target on ``x``, gradients to its decomposed parameters."""
    params = {k: v.detach().requires_grad_(True) for k, v in target.params().items()}
    out = torch.func.functional_call(target.model, params, (x,))
    target.loss(out, x).backward()


def _seconds(fn, repeats: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@pytest.mark.benchmark(group="floor")
@pytest.mark.parametrize(("toy_name", "method"), CASES)
def test_step_over_floor(benchmark, heavy, one_thread, toy, toy_name: str, method: str) -> None:  # noqa: ANN001
    t = toy(toy_name)
    m = METHODS.get(method)()
    batch = int(m.hparams(toy_name)["batch_size"])
    target = t.target()
    x = t.sample(batch, torch.Generator().manual_seed(0))
    floor = _seconds(lambda: fwd_bwd(target, x), 20)

    def run(steps: int) -> float:
        t0 = time.perf_counter()
        dec = m.decompose(t.target(), Budget(steps=steps), 0)
        assert dec.record.steps == steps
        return time.perf_counter() - t0

    run(SHORT)  # warm-up, not timed
    short, long = (min(run(n) for _ in range(ROUNDS)) for n in (SHORT, LONG))
    step = max(0.0, long - short) / (LONG - SHORT)
    benchmark.extra_info.update(
        {"batch": batch, "step_s": step, "floor_s": floor, "step_over_floor": step / floor if floor else None}
    )
    print(f"\n{toy_name} {method}: batch {batch}, step {step * 1e3:.2f} ms, floor {floor * 1e3:.3f} ms, "
          f"ratio {step / floor:.0f}")  # fmt: skip
    benchmark(fwd_bwd, target, x)
