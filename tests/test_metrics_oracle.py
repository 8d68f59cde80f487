"""On the oracle every recovery metric is at its best value; metrics that do not apply say N/A.

The fast tests use the cached foundation toys and the in-memory synthetic toys; the slow test runs every
registered toy model (some train for a minute on first use).
"""

from __future__ import annotations

import pytest
import torch
from fixtures.linear_toy import LinearToy

from benchmark.decomposition import Decomposition
from benchmark.method import Budget
from benchmark.registry import METHODS, TOY_MODELS
from benchmark.scoring import score
from benchmark.toy import ToyModel

BEST = {
    "hungarian": 1.0,
    "mmcs": 1.0,
    "mmcs_apd": 1.0,
    "ml2r_apd": 1.0,
    "subspace_coverage": 1.0,
    "support_purity": 1.0,
    "split_mechanisms": 0.0,
    "merged_components": 0.0,
    "dead_components": 0.0,
    "faithfulness_error": 0.0,
    "activity_precision": 1.0,
    "activity_recall": 1.0,
    "activity_f1": 1.0,
    "active_excess": 0.0,
}
APPLIES_ALWAYS = {"hungarian", "mmcs", "support_purity", "split_mechanisms", "merged_components", "dead_components"}


def oracle_scores(toy: ToyModel) -> dict:
    dec = METHODS.get("oracle")().decompose(toy.target(with_ground_truth=True), Budget(), 0)
    return score(toy, dec)


def support_leak(toy: ToyModel) -> float:
    """Largest share of squared norm that a ground-truth vector puts outside its own support mask."""
    worst = 0.0
    for mech in toy.ground_truth.mechanisms:
        vecs = mech.subspace if mech.components is None else {k: v.unsqueeze(0) for k, v in mech.components.items()}
        assert vecs is not None
        total = sum(float(v.double().pow(2).sum()) for v in vecs.values())
        out = sum(
            float((v.double().pow(2) * ~mech.support.get(k, torch.zeros_like(v[0], dtype=torch.bool))).sum())
            for k, v in vecs.items()
        )
        worst = max(worst, out / max(total, 1e-300))
    return worst


def check_oracle(toy: ToyModel) -> None:
    s = oracle_scores(toy)
    leak = support_leak(toy)
    for name, best in BEST.items():
        if name == "support_purity" and leak > 1e-6:
            # the toy's own ground truth leaks outside its support mask: purity measures that, not the method
            assert 1.0 - 2 * leak <= s[name] < 1.0, f"{toy.spec.name}: support_purity {s[name]}, leak {leak}"
            continue
        if s[name] is None:
            assert name not in APPLIES_ALWAYS, f"{toy.spec.name}: {name} is N/A on the oracle"
            continue
        assert s[name] == pytest.approx(best, abs=1e-5), f"{toy.spec.name}: {name} = {s[name]}, best {best}"


@pytest.mark.parametrize("name", ["tms_5-2", "block_mlp"])
def test_oracle_best_on_foundation_toys(toy, name):
    check_oracle(toy(name))


@pytest.mark.parametrize("subspace", [0, 2])
def test_oracle_best_on_synthetic_toys(subspace):
    toy = LinearToy(torch.randn(4, 6, generator=torch.Generator().manual_seed(3)), subspace_cols=subspace)
    check_oracle(toy)
    s = oracle_scores(toy)
    if subspace:
        assert s["subspace_coverage"] == pytest.approx(1.0)
        assert s["faithfulness_error"] is None  # a pure span is not an exact split: no faithfulness claim
    else:
        assert s["subspace_coverage"] is None


def test_not_applicable_metrics_say_na(toy):
    tms = toy("tms_5-2")
    W = tms.model.W.detach()
    bare = Decomposition([{"W": W.clone()}])  # no attributions, no faithfulness claim (L3D-like)
    s = score(tms, bare)
    for name in (
        "faithfulness_error",
        "ml2r_apd",
        "activity_precision",
        "activity_recall",
        "activity_f1",
        "mean_active_components",
        "active_excess",
        "subspace_coverage",
    ):
        assert s[name] is None, name
    for name in APPLIES_ALWAYS | {"mmcs_apd", "intervention_specificity"}:
        assert s[name] is not None, name


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TOY_MODELS.names()))
def test_oracle_best_on_every_toy_model(toy, name):
    check_oracle(toy(name))
