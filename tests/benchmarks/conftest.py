"""Shared fixtures of the performance benchmarks (pytest-benchmark).

Run them with ``pytest tests/benchmarks --benchmark-enable`` (add ``--benchmark-only`` to skip the
non-benchmark tests, ``--benchmark-json=out.json`` to keep the numbers). The default test run passes
``--benchmark-disable``: each benchmark then runs its function once, unmeasured, as a smoke test, and the
cases that fixture ``heavy`` marks (a whole decomposition per method and toy model) are skipped.
"""

from __future__ import annotations

import pytest

from benchmark.allocator import keep_freed_memory


@pytest.fixture
def heavy(request) -> None:
    """Skip this case unless benchmarks are enabled: it runs a method end to end, with freed memory kept for
    reuse as in the runner's workers (:mod:`benchmark.allocator`), so that its time does not depend on what
    ran before it in this process."""
    if not request.config.getoption("benchmark_enable", default=False):
        pytest.skip("end-to-end method timing: run `pytest tests/benchmarks --benchmark-enable`")
    keep_freed_memory()
