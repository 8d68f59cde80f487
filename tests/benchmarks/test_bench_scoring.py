"""Wall time of scoring itself: every registered metric on one decomposition, per tier-0/1 toy model.

``pytest tests/benchmarks/test_bench_scoring.py --benchmark-enable``. The decompositions come from the
reference rows (oracle: one component per mechanism; random and pca), so the cases do not depend on
which research methods are registered.
"""

from __future__ import annotations

import pytest

from benchmark.method import Budget
from benchmark.registry import METHODS
from benchmark.scoring import HEADLINE, score
from benchmark.suites import toy_tiers

TOYS = sorted(t for t, tier in toy_tiers("reproduction").items() if tier <= 1)


@pytest.mark.parametrize("method", ["oracle", "random", "pca"])
@pytest.mark.parametrize("toy_name", TOYS)
def test_score(benchmark, one_thread, toy, toy_name: str, method: str) -> None:
    benchmark.group = f"scoring-{toy_name}"
    built = toy(toy_name)
    cls = METHODS.get(method)
    dec = cls().decompose(built.target(with_ground_truth=cls.sees_ground_truth), Budget(), 0, "cpu")
    metrics = benchmark(score, built, dec)
    assert HEADLINE in metrics
    if method == "oracle":
        assert metrics[HEADLINE] == pytest.approx(1.0, abs=1e-6)
