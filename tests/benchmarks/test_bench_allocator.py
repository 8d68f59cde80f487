"""One decomposition in a fresh worker with glibc's default allocator against freed memory kept for reuse
(:mod:`benchmark.allocator`, what the runner's workers do), side by side in one run.

Each round forks a fresh child from the fork server (as the runner starts a worker), which runs one
decomposition on one thread and reports its time, its page faults and a digest of its components; the two
variants must give the same digest (the allocator changes where tensors live, never a value). A worker's
later cells may find the heap already grown by earlier ones, so the saving is largest on a worker's first
cell (and on every cell with ``--cells-per-worker 1``); it scales with the steps.

``pytest tests/benchmarks/test_bench_allocator.py --benchmark-enable -s`` (glibc only; elsewhere both
variants are the defaults).
"""

from __future__ import annotations

import pytest
from fresh_worker import decompose_in_fresh_worker

CASES = [("tms_5-2", "spd", 500), ("tms_5-2", "vpd", 500), ("tms_5-2", "apd", 500), ("tms_40-10", "spd", 100)]
ROUNDS = 3
_digests: dict[tuple[str, str], set[str]] = {}


@pytest.mark.benchmark(group="allocator")
@pytest.mark.parametrize("allocator", ["glibc default", "freed memory kept"])
@pytest.mark.parametrize(("toy_name", "method", "steps"), CASES)
def test_fresh_worker_decomposition(benchmark, heavy, toy, toy_name, method, steps, allocator):  # noqa: ANN001
    toy(toy_name)  # built (or read from the cache) here, not in the timed child
    runs = []
    benchmark.pedantic(
        lambda: runs.append(decompose_in_fresh_worker(toy_name, method, steps, allocator != "glibc default")),
        rounds=ROUNDS,
        iterations=1,
    )
    best = min(runs)
    _digests.setdefault((toy_name, method), set()).update(r.digest for r in runs)
    assert len(_digests[(toy_name, method)]) == 1, "the allocator changed a decomposition"
    benchmark.extra_info.update({"decompose_s": best.seconds, "page_faults": best.page_faults})
    print(f"\n{toy_name} {method} {steps} steps, {allocator}: {best.seconds:.2f} s, {best.page_faults} page faults")
