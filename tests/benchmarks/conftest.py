"""Shared fixtures of the performance benchmarks (pytest-benchmark).

Run them with ``pytest tests/benchmarks --benchmark-enable`` (add ``--benchmark-only`` to skip the
non-benchmark tests, ``--benchmark-json=out.json`` to keep the numbers). The default test run passes
``--benchmark-disable``: each benchmark then runs its function once, unmeasured, as a smoke test, and the
cases that fixture ``heavy`` marks (a whole decomposition per method and toy model) are skipped.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def heavy(request) -> None:
    """Skip this case unless benchmarks are enabled: it runs a method end to end."""
    if not request.config.getoption("benchmark_enable", default=False):
        pytest.skip("end-to-end method timing: run `pytest tests/benchmarks --benchmark-enable`")
