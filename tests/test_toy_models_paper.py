"""Each trained toy model reaches its source paper's figure, within a stated tolerance (issue 3).

Where the paper publishes no number for its target network (APD/SPD for TMS, L3D for all its toys), the
test says so and checks a computed reference instead (the zero-output loss, or the paper's qualitative
claim made quantitative). The figures come from ``docs/reference/apd_spd.md`` and ``docs/reference/l3d.md``.
"""

from __future__ import annotations

import math

import pytest
import torch


def test_tms_5_2_is_a_pentagon(toy):
    """Elhage et al. 2022 (TMS, Fig. 'five features in two dimensions'; also APD arXiv:2501.14926 Fig. 2):
    at p = 0.05 all five features are kept, as a regular pentagon. Tolerance: column norms within 10% of
    each other, neighbouring angles 72 +- 6 degrees, negative biases (the read-out filters interference)."""
    W, b = toy("tms_5-2").model.W, toy("tms_5-2").model.b
    norms = W.norm(dim=0)
    assert float(norms.max() / norms.min()) < 1.1
    a = torch.atan2(W[1], W[0]).sort().values
    gaps = torch.rad2deg(torch.diff(torch.cat([a, a[:1] + 2 * math.pi])))
    assert torch.allclose(gaps, torch.full_like(gaps, 72.0), atol=6.0), gaps
    assert (b < 0).all()


@pytest.mark.parametrize("name", ["tms_40-10", "tms_40-10-id", "parallel_tms", "tms_5-2-id"])
def test_tms_keeps_every_feature(toy, name):
    """APD/SPD report no training loss for their TMS targets; their MMCS/ML2R figures (SPD Table 1: MMCS
    1.000 on 40-10) presuppose that every feature has a column. We require every column norm within 50%
    of the median, and a loss below 0.3 of the zero-output loss E[x^2] = p/3 (measured: 0.10 for 5-2, 0.24 for
    40-10; a 40-10 model that kept only 10 features would sit near 0.75)."""
    t = toy(name)
    norms = t.model.W.norm(dim=0)
    assert float(norms.min() / norms.median()) > 0.5
    assert t.build_info.extra["final_loss"] < 0.3 * (0.05 / 3)


def test_resid_mlp1_one_hot_output_matches_apd(toy):
    """APD arXiv:2501.14926 appendix (resid MLP 1 layer): a one-hot input x_i = 1 gives x_hat_i ~ 1.6 against
    the label 2.0 (the model undershoots the ReLU part), about equally for all features. Tolerance: mean
    within 1.6 +- 0.1, every feature between 1.3 and 2.0."""
    t = toy("resid_mlp1")
    out = t.model(torch.eye(100)).diagonal()
    assert abs(float(out.mean()) - 1.6) < 0.1
    assert float(out.min()) > 1.3 and float(out.max()) < 2.0


@pytest.mark.parametrize("name", ["resid_mlp1", "resid_mlp2", "resid_mlp3"])
def test_resid_mlp_beats_the_monosemantic_baseline(toy, name):
    """APD appendix: the trained model beats the monosemantic baseline (one neuron per feature for as many
    features as there are neurons, nothing for the rest), whose loss is n_missing * p / 6 / n_features. We
    require at least 10% lower on held-out inputs."""
    t = toy(name)
    x = t.sample(10_000, torch.Generator().manual_seed(99))
    loss = float(t.loss(t.model(x), x))
    assert loss < 0.9 * t.baseline_loss(), (loss, t.baseline_loss())


@pytest.mark.parametrize("name,share", [("tmcs_10-5-10", 0.05), ("higher_rank_30-10-30", 0.02)])
def test_circuit_models_fit_xa(toy, name, share):
    """L3D arXiv:2504.00194 gives no training loss for its targets. Our reference: the loss must be below
    ``share`` of the zero-output loss E[(xA)^2] (measured: 0.022 and 0.006)."""
    t = toy(name)
    x = t.sample(50_000, torch.Generator().manual_seed(99))
    y = x @ t.model.A
    assert float(((t.model(x) - y) ** 2).mean()) < share * float((y**2).mean())


def test_square_mlp_squares_each_feature(toy):
    """L3D arXiv:2504.00194 Fig. 8/9 (x_i -> x_i^2 curves): each output traces x_i^2. Tolerance: at x = +-0.8
    e_i within 0.1 of 0.64, and the loss below 0.1 of the zero-output loss E[x^4] (measured 0.045)."""
    t = toy("square_mlp")
    eye = torch.eye(5) * 0.8
    for sign in (1, -1):
        assert torch.allclose(t.model(sign * eye).diagonal(), torch.full((5,), 0.64), atol=0.1)
    x = t.sample(50_000, torch.Generator().manual_seed(99))
    assert float(t.loss(t.model(x), x)) < 0.1 * float((x**4).mean())


def test_parallel_tms_is_three_copies(toy):
    """L3D Fig. S3: three copies of one trained TMS 5-2, block-diagonal, no weight across blocks."""
    W, b = toy("parallel_tms").model.W, toy("parallel_tms").model.b
    block = W[:2, :5]
    mask = torch.block_diag(*[torch.ones(2, 5)] * 3).bool()
    assert torch.equal(W, torch.block_diag(block, block, block)) and (W[~mask] == 0).all()
    assert torch.equal(b, b[:5].repeat(3))


def test_without_the_mixing_term_the_resid_mlp_loses_its_advantage(toy):
    """Bhagat et al. 2025 (arXiv:2606.14673): trained on labels without the mixing term W_E W_E^T - I, the
    1-layer residual MLP no longer beats the monosemantic baseline. Measured: 0.000846 against the baseline's
    0.000833 (seed 0), where the original toy reaches 0.000694. We require the control within +-10% of the
    baseline, and the original at least 10% below it (test above), on held-out inputs."""
    t = toy("resid_mlp1-nomix")
    x = t.sample(10_000, torch.Generator().manual_seed(99))
    loss = float(t.loss(t.model(x), x))
    assert 0.9 * t.baseline_loss() < loss < 1.1 * t.baseline_loss(), (loss, t.baseline_loss())
    n = len(t.ground_truth.mechanisms) - 1  # the computed features, beside the dense rest
    assert 0.25 * t.n_features <= n < t.n_features
