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


@pytest.mark.benchmark(group="adversarial-induction")
@pytest.mark.parametrize("masked_sum", ["per-matrix", "dense"])
def test_adversarial_error_on_a_stored_transformer_cell(benchmark, heavy, one_thread, monkeypatch, masked_sum) -> None:  # noqa: ANN001
    """``adversarial_error`` on the committed board's ``induction_trained`` x VPD seed 0 (522 components in 8
    matrices, 1,024 inputs, 21 PGD passes): each matrix summed over its own components (the metric) against
    the dense ``[B, C] @ [C, D]`` sum it replaced, side by side; the two give the same error."""
    from pathlib import Path

    import benchmark.metrics.adversarial as adversarial
    from benchmark.rescore import stored_decomposition
    from benchmark.results import read_result
    from benchmark.scoring import ComponentSpace, eval_inputs
    from benchmark.toy import load_toy

    root = Path(__file__).resolve().parents[2] / "leaderboard" / "results"
    path = root / "induction_trained" / "vpd" / "seed0.json"
    if not path.exists():
        pytest.skip("the committed board's induction_trained x vpd cell is not here")
    r = read_result(path, root)
    built = load_toy(r.cell.toy)
    ctx = ComponentSpace(built, stored_decomposition(root, r, str(path)).decomposition(eval_inputs(built))).raw
    assert ctx.attributions is not None and ctx.components.shape[0] > 0  # built before timing
    if masked_sum == "dense":
        monkeypatch.setattr(adversarial, "_blocks", lambda g, c, sizes: [(None, g, b) for b in c.split(sizes, dim=1)])
    value = benchmark.pedantic(adversarial.adversarial_error, args=(ctx,), rounds=3, iterations=1)
    assert value == pytest.approx(r.metrics["adversarial_error"], abs=1e-9)
