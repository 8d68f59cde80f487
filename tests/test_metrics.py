"""One hand-computed case per metric, on the 2x2 linear toy W = diag(3, 4) (tests/fixtures/linear_toy.py).

Mechanism 0 is column 0, z0 = [[3, 0], [0, 0]]; mechanism 1 is column 1, z1 = [[0, 0], [0, 4]]. The base
decomposition is c0 = [[1, 1], [0, 0]] (half its mass off column 0) and c1 = [[0, 0], [0, 2]].
"""

from __future__ import annotations

import math

import pytest
import torch
from fixtures.linear_toy import LinearToy

from benchmark.decomposition import Decomposition, DecompositionError
from benchmark.metrics import intervention
from benchmark.registry import METRICS
from benchmark.scoring import HEADLINE, ComponentSpace, score

W = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
C0 = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
C1 = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])  # hand-picked eval inputs
R2 = 1 / math.sqrt(2)


def _attr(x: torch.Tensor) -> torch.Tensor:
    # c0 fires on feature 0; c1 fires on feature 1 and, wrongly, a little on feature 0
    return torch.stack([x[:, 0], x[:, 1] + 0.5 * x[:, 0]], dim=1)


def run(components, *, faithful=False, attributions=None, groups=None, names=None, x=X) -> dict:
    toy = LinearToy(W)
    dec = Decomposition([{"W": c} for c in components], attributions=attributions, groups=groups, faithful=faithful)
    ctx = ComponentSpace(toy, dec).own
    ctx.space.eval_inputs = x  # override the cached sample with the hand-picked inputs
    out = {}
    for name in names or METRICS.names():
        v = METRICS.get(name).fn(ctx)
        out[name] = None if v is None else float(v)
    return out


def test_mmcs_and_hungarian_hand_computed():
    s = run([C0, C1])
    assert s["mmcs"] == pytest.approx((R2 + 1) / 2)
    assert s["hungarian"] == pytest.approx((R2 + 1) / 2)


def test_split_lowers_hungarian_not_mmcs():
    s = run([W * torch.tensor([[1.0, 0], [0, 0]]) * 0.5] * 2 + [W * torch.tensor([[0.0, 0], [0, 1]])])
    assert s["mmcs"] == pytest.approx(1.0)
    assert s["hungarian"] == pytest.approx(2 / 3)  # two matched at 1, divided by 3 live units
    assert s["split_mechanisms"] == 1.0 and s["merged_components"] == 0.0


def test_merge_is_visible():
    s = run([W.clone()])  # one component covering both mechanisms: cos 3/5 and 4/5
    assert s["mmcs"] == pytest.approx((0.6 + 0.8) / 2)
    assert s["hungarian"] == pytest.approx(0.8 / 2)
    assert s["merged_components"] == 1.0 and s["split_mechanisms"] == 0.0


def test_support_purity_hand_computed():
    assert run([C0, C1])["support_purity"] == pytest.approx((0.5 + 1.0) / 2)


def test_apd_mmcs_and_ml2r_hand_computed():
    s = run([C0, C1], faithful=True)
    # column 0: c0's column is (1, 0) -> cos 1 (its off-column mass is ignored); column 1: c1's (0, 2) -> cos 1
    assert s["mmcs_apd"] == pytest.approx(1.0)
    assert s["ml2r_apd"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    flipped = run([-C0, C1], faithful=True)  # signed where faithful: -c0 is anti-aligned with column 0
    assert flipped["mmcs_apd"] == pytest.approx((0.0 + 1.0) / 2)
    assert run([-C0, C1], faithful=False)["mmcs_apd"] == pytest.approx(1.0)


def test_faithfulness_hand_computed_and_na():
    s = run([C0, C1], faithful=True)
    assert s["faithfulness_error"] == pytest.approx(3 / 5)  # ||[[2, -1], [0, 2]]|| / ||W||
    assert run([C0, C1], faithful=False)["faithfulness_error"] is None
    assert run([C0, C1], faithful=False)["ml2r_apd"] is None


def test_activity_hand_computed():
    s = run([C0, C1], attributions=_attr)
    # threshold 0.1 * 1.5; c0 active on rows 0, 2; c1 on rows 0, 1, 2 -> TP 4, FP 1, FN 0
    assert s["activity_precision"] == pytest.approx(0.8)
    assert s["activity_recall"] == pytest.approx(1.0)
    assert s["activity_f1"] == pytest.approx(2 * 0.8 / 1.8)
    assert s["mean_active_components"] == pytest.approx(5 / 4)
    assert s["active_excess"] == pytest.approx(5 / 4 - 1.0)


def test_activity_unmatched_units_and_mechanisms_count():
    # a third, unmatched unit that fires everywhere adds false positives
    extra = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    s = run([C0, C1, extra], attributions=lambda x: torch.cat([_attr(x), torch.ones(len(x), 1)], dim=1))
    assert s["activity_precision"] == pytest.approx(4 / (4 + 1 + 4))
    # only c0: mechanism 1's two uses are missed
    s = run([C0], attributions=lambda x: x[:, :1])
    assert s["activity_recall"] == pytest.approx(2 / 4) and s["activity_precision"] == pytest.approx(1.0)


def test_activity_na_without_attributions():
    s = run([C0, C1])
    for name in ("activity_precision", "activity_recall", "activity_f1", "mean_active_components", "active_excess"):
        assert s[name] is None


def test_intervention_specificity_hand_computed():
    # y = x W^T. "Off" inputs use the other mechanism but not this one; an input using nothing is left out.
    # Along c0/|c0|: ||dy|| = s/sqrt2 |x0 + x1|: on rows 0, 2, 4 (1, 2, 2) mean 5/3, off rows 1, 5 (1, 2) mean 3/2.
    # Along c1: ||dy|| = s |x1|: zero on the off rows 0, 4 -> clipped at 1e6. Geometric mean sqrt(10/9 * 1e6).
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    s = run([C0, C1], names=["intervention_specificity"], x=x)
    assert s["intervention_specificity"] == pytest.approx(math.sqrt(10 / 9 * 1e6), rel=1e-5)
    # sign- and order-free: the same with -c1, c0
    s2 = run([-C1, C0], names=["intervention_specificity"], x=x)
    assert s2["intervention_specificity"] == pytest.approx(s["intervention_specificity"], rel=1e-6)


def test_intervention_specificity_reads_rounding_level_changes_as_none(monkeypatch):
    """Output changes at float64 rounding level (here 1e-16 of the output, random) are no measurable change:
    every ratio is 1, whatever the rounding. Without the floor the same inputs give rounding over rounding,
    which two CPUs' kernels did not agree on (docs/metrics.md)."""
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    measured = intervention._output_changes

    def rounding_only(seed: int):
        def changes(ctx, dirs, xs):
            out = measured(ctx, dirs, xs).clone()
            noise = torch.rand(out[:, :2].shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
            out[:, :2] = 1e-16 * out[:, 2:3] * noise  # [K, 2, B]: both signs' changes; out[:, 2] is ||f(x; W)||
            return out

        return changes

    def scores() -> list[float]:
        got = []
        for seed in (0, 1):
            monkeypatch.setattr(intervention, "_output_changes", rounding_only(seed))
            got.append(run([C0, C1], names=["intervention_specificity"], x=x)["intervention_specificity"])
        return got

    assert scores() == [1.0, 1.0]
    monkeypatch.setattr(intervention, "FLOOR", 0.0)
    a, b = scores()
    assert a != b and abs(math.log(a / b)) > 0.01


def test_dead_components_hand_computed():
    s = run([C0, C1, C1 * 1e-5, torch.zeros(2, 2) + torch.tensor([[0.0, 0.0], [1.0, 0.0]])])
    assert s["dead_components"] == 1.0  # c1 * 1e-5 is below 1e-3 of the largest norm
    s = run([C0, C1], attributions=lambda x: torch.stack([x[:, 0], torch.zeros(len(x))], dim=1))
    assert s["dead_components"] == 1.0  # c1 is never active


def test_dead_units_are_ignored_by_recovery():
    # a negligible third component does not count as an extra unit in the one-to-one score
    assert run([C0, C1, C1 * 1e-6])["hungarian"] == pytest.approx(run([C0, C1])["hungarian"])


def test_groups_are_summed_into_one_unit():
    half = torch.tensor([[1.5, 0.0], [0.0, 0.0]])
    s = run([half, C1, half], groups=[[0, 2]])
    assert s["mmcs"] == pytest.approx(1.0) and s["hungarian"] == pytest.approx(1.0)
    assert s["split_mechanisms"] == 0.0
    with pytest.raises(DecompositionError, match="overlap"):
        run([half, C1, half], groups=[[0, 2], [2, 1]])


def test_subspace_coverage_hand_computed():
    # 2x3 W: column 0 exact; columns 1, 2 form one rank-2 subspace mechanism
    toy = LinearToy(torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]), subspace_cols=2)
    e = torch.eye(6).reshape(6, 2, 3)
    one = Decomposition([{"W": toy.W0 * torch.tensor([[1.0, 0, 0], [0, 0, 0]])}, {"W": e[1]}])
    s = score(toy, one, ["subspace_coverage", "mmcs", "hungarian"])
    # one vector inside the rank-2 subspace is pure but covers half of it: credit sqrt(min(1/2, 1))
    assert s["mmcs"] == pytest.approx((1 + math.sqrt(1 / 2)) / 2)
    assert s["subspace_coverage"] == pytest.approx(math.sqrt(1 / 2))
    both = Decomposition(one.components[:1] + [{"W": e[1]}, {"W": e[5]}], groups=[[1, 2]])
    own = ComponentSpace(toy, both).own  # the two vectors as one unit span the whole mechanism
    assert METRICS.get("subspace_coverage").fn(own) == pytest.approx(1.0)
    assert METRICS.get("hungarian").fn(own) == pytest.approx(1.0)
    assert run([C0, C1])["subspace_coverage"] is None  # no subspace mechanism: N/A


def test_bad_input_gets_clear_errors():
    with pytest.raises(DecompositionError, match="shape"):
        run([torch.zeros(3, 2)])
    with pytest.raises(DecompositionError, match="NaN"):
        run([C0 * float("nan")])
    with pytest.raises(DecompositionError, match="attributions"):
        run([C0, C1], attributions=lambda x: x[:, :1])
    with pytest.raises(DecompositionError, match="NaN"):
        run([C0, C1], attributions=lambda x: x * float("nan"))


def test_every_metric_is_documented():
    assert HEADLINE in METRICS.names()
    for name, m in METRICS.items():
        assert m.version and m.description and isinstance(m.higher_is_better, bool), name


def test_every_builtin_metric_is_on_the_metrics_page():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    for name, m in METRICS.items():
        if m.fn.__module__.startswith("benchmark.metrics."):
            assert f"`{name}`" in page, f"{name} is not defined in docs/metrics.md"
            row = next((line for line in page.splitlines() if line.startswith(f"| `{name}`")), None)
            assert row is not None and row.rstrip(" |").endswith(m.version), f"{name}: no table row with version"


def test_apd_metrics_match_the_papers_column_formula(toy):
    """On TMS 5-2, mmcs_apd / ml2r_apd equal APD/SPD's per-column formula written out directly."""
    tms = toy("tms_5-2")
    Wt = tms.model.W.detach().double()  # [2, 5]: column j is feature j
    P = torch.randn(7, *Wt.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps = 1e-12
    cols_cos = torch.stack(
        [
            torch.stack(
                [P[c, :, j] @ Wt[:, j] / max(float(P[c, :, j].norm() * Wt[:, j].norm()), eps) for c in range(len(P))]
            )
            for j in range(Wt.shape[1])
        ]
    )  # [5, C]
    best = cols_cos.argmax(dim=1)
    mmcs = float(cols_cos.max(dim=1).values.mean())
    ml2r = float(torch.stack([P[best[j], :, j].norm() / Wt[:, j].norm() for j in range(Wt.shape[1])]).mean())
    s = score(tms, Decomposition([{"W": p.float()} for p in P], faithful=True), ["mmcs_apd", "ml2r_apd"])
    assert s["mmcs_apd"] == pytest.approx(mmcs, abs=1e-6)
    assert s["ml2r_apd"] == pytest.approx(ml2r, abs=1e-6)
