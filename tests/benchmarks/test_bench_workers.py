"""Starting a worker process until it reports ready: spawned (imports torch and the engine itself) against
forked from the fork server (benchmark/processes.py), side by side in one run.

``pytest tests/benchmarks/test_bench_workers.py --benchmark-enable``. The fork server itself starts once per
parent process (its own torch import); the warm-up round pays that, the timed rounds do not.
"""

from __future__ import annotations

import multiprocessing as mp

import pytest

from benchmark.executors import WorkerConfig, _receive, _Worker
from benchmark.processes import worker_context


def _start_and_stop(ctx) -> None:  # noqa: ANN001
    worker = _Worker(ctx, WorkerConfig())  # started as the local executor starts its workers
    assert _receive(worker.conn)[0] == "ready"
    worker.conn.send(None)
    worker.proc.join(timeout=60)
    exitcode = worker.proc.exitcode
    worker.kill()
    assert exitcode == 0


@pytest.mark.benchmark(group="worker-start")
@pytest.mark.parametrize("how", ["spawn", "fork server"])
def test_worker_start(benchmark, heavy, how):
    if how == "fork server" and "forkserver" not in mp.get_all_start_methods():
        pytest.skip("no fork server on this platform")
    ctx = mp.get_context("spawn") if how == "spawn" else worker_context()
    benchmark.pedantic(_start_and_stop, args=(ctx,), rounds=5, iterations=1, warmup_rounds=1)
