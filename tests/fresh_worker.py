"""One decomposition in a fresh process forked from the fork server, as the runner starts a worker, with or
without :func:`benchmark.allocator.keep_freed_memory` (``tests/test_allocator.py`` and its benchmark)."""

from __future__ import annotations

import hashlib
import resource
import time
from typing import NamedTuple

import torch

from benchmark.allocator import keep_freed_memory
from benchmark.method import Budget
from benchmark.processes import run_isolated
from benchmark.registry import METHODS
from benchmark.toy import load_toy


class FreshRun(NamedTuple):
    seconds: float  # the decomposition's wall time, toy model loaded beforehand
    page_faults: int  # minor page faults during it
    digest: str  # SHA-256 of every component's dense tensors, in order


def _decompose(job: tuple[str, str, int, bool]) -> FreshRun:
    toy_name, method, steps, keep = job
    if keep:
        keep_freed_memory()
    torch.set_num_threads(1)
    target = load_toy(toy_name).target()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    dec = METHODS.get(method)().decompose(target, Budget(steps=steps), 0)
    seconds = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    digest = hashlib.sha256()
    for i in range(len(dec)):
        for _, tensor in sorted(dec.dense(i).items()):
            digest.update(tensor.detach().contiguous().numpy().tobytes())
    return FreshRun(seconds, faults, digest.hexdigest())


def decompose_in_fresh_worker(toy_name: str, method: str, steps: int, keep: bool) -> FreshRun:
    """``method``'s decomposition of ``toy_name`` (seed 0, ``steps`` steps, one thread) in a fresh child."""
    return run_isolated(_decompose, (toy_name, method, steps, keep), timeout_s=600)
