"""glibc's allocator kept from unmapping freed memory (benchmark.allocator): same decompositions, no page
faults on SPD's per-step tensors, and the runner's workers set it."""

from __future__ import annotations

import pytest
import torch
from fresh_worker import decompose_in_fresh_worker

from benchmark.allocator import _glibc, keep_freed_memory, release_freed_memory
from benchmark.processes import run_isolated

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


def _keep_twice_and_release(_: object) -> tuple[bool, bool]:
    first, second = keep_freed_memory(), keep_freed_memory()
    release_freed_memory()
    return first, second


@glibc
def test_keep_and_release_are_accepted():
    # in a child: this test process keeps glibc's defaults
    assert run_isolated(_keep_twice_and_release, None, 60) == (True, True)  # idempotent


def test_the_runners_workers_keep_freed_memory(monkeypatch):
    import benchmark.executors as executors
    from benchmark.executors import WorkerConfig, init_worker

    calls = []
    monkeypatch.setattr(executors, "keep_freed_memory", lambda: calls.append("keep"))
    threads = torch.get_num_threads()
    try:
        init_worker(WorkerConfig())
    finally:
        torch.set_num_threads(threads)  # init_worker sets a worker's threads; this is the test's process
    assert calls == ["keep"]


PLUGIN = '''
import torch

from benchmark.decomposition import Decomposition
from benchmark.method import Method
from benchmark.registry import METHODS


class _Whole(Method):
    version = "1"
    paper = "test_allocator"

    def decompose(self, target, budget, seed, device="cpu"):
        return Decomposition([{n: p.detach().clone()} for n, p in target.params().items()])


@METHODS.register("alloc_heavy")
class Heavy(_Whole):
    """Holds 400 MB in 20 MB blocks (under the kept mmap threshold, so from the heap), then frees them."""

    def decompose(self, target, budget, seed, device="cpu"):
        blocks = [torch.ones(5 << 20) for _ in range(20)]
        del blocks
        return super().decompose(target, budget, seed, device)


METHODS.register("alloc_light", type("Light", (_Whole,), {}))
'''


@glibc
def test_a_cells_peak_memory_is_not_what_the_cell_before_it_freed(tmp_path):
    from benchmark.results import Cell, read_result
    from benchmark.runner import run_grid

    plugin = tmp_path / "alloc_plugin.py"
    plugin.write_text(PLUGIN)
    cells = [Cell("tms_5-2", "alloc_heavy", 0), Cell("tms_5-2", "alloc_light", 0)]
    run_grid(cells, tmp_path / "results", plugins=[str(plugin)], jobs=1, log=lambda _: None)  # one worker, in order
    heavy, light = (read_result(c.path(tmp_path / "results"))["cost"]["peak_memory_mb"] for c in cells)
    assert heavy - light > 300  # without the release, the 400 MB kept after the first cell counted in the second's
