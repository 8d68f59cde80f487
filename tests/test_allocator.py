"""glibc's allocator kept from unmapping freed memory (benchmark.allocator): same decompositions, no page
faults on SPD's per-step tensors, and the runner's workers set it."""

from __future__ import annotations

import pytest
from fresh_worker import decompose_in_fresh_worker

from benchmark.allocator import _glibc, keep_freed_memory, release_freed_memory

glibc = pytest.mark.skipif(_glibc() is None, reason="the C library is not glibc")


@glibc
def test_keeping_freed_memory_changes_no_decomposition_and_stops_the_page_faults(toy):
    toy("tms_5-2")
    steps = 40
    default = decompose_in_fresh_worker("tms_5-2", "spd", steps, keep=False)
    kept = decompose_in_fresh_worker("tms_5-2", "spd", steps, keep=True)
    assert kept.digest == default.digest
    # each step allocates and frees about ten 2.6 MB tensors: fresh pages every step by default (measured:
    # 145,000 faults in all, 49,000 kept; the set-up and the export fault alike in both)
    assert default.page_faults - kept.page_faults > 500 * steps


@glibc
def test_keep_and_release_are_accepted():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent
    release_freed_memory()


def test_the_runners_workers_keep_freed_memory(monkeypatch):
    import benchmark.executors as executors
    from benchmark.executors import WorkerConfig, init_worker

    calls = []
    monkeypatch.setattr(executors, "keep_freed_memory", lambda: calls.append("keep"))
    init_worker(WorkerConfig())
    assert calls == ["keep"]
