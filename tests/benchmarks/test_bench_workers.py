"""Starting a worker process until it reports ready: spawned (imports torch and the engine itself) against
forked from the fork server (benchmark/processes.py), side by side in one run.

``pytest tests/benchmarks/test_bench_workers.py --benchmark-enable``. The fork server itself starts once per
parent process (its own torch import); the warm-up round pays that, the timed rounds do not.
"""

from __future__ import annotations

import multiprocessing as mp

import pytest

from benchmark.executors import WorkerConfig, _receive, _worker_main
from benchmark.processes import worker_context


def _start_and_stop(ctx) -> None:  # noqa: ANN001
    conn, child = ctx.Pipe()
    life, lifeline = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker_main, args=(child, WorkerConfig(), life), daemon=True)
    proc.start()
    child.close()
    life.close()
    assert _receive(conn)[0] == "ready"
    conn.send(None)
    proc.join(timeout=60)
    conn.close()
    lifeline.close()
    assert proc.exitcode == 0


@pytest.mark.benchmark(group="worker-start")
@pytest.mark.parametrize("how", ["spawn", "fork server"])
def test_worker_start(benchmark, heavy, how):
    if how == "fork server" and "forkserver" not in mp.get_all_start_methods():
        pytest.skip("no fork server on this platform")
    ctx = mp.get_context("spawn") if how == "spawn" else worker_context()
    benchmark.pedantic(_start_and_stop, args=(ctx,), rounds=5, iterations=1, warmup_rounds=1)
