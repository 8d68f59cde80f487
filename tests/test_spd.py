"""Tests of the SPD adapter (methods/spd.py, methods/_spd_core.py, methods/_spd_sites.py).

Fast tests check the parts against hand-computed cases; the ``slow`` tests reproduce the SPD paper
(arXiv:2506.20790, section 4 and appendix) on the toy models: run them with ``pytest -m slow``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchmark.method import Budget
from benchmark.registry import METHODS
from methods._spd_core import (
    SPDConfig,
    SPDTrainer,
    lower_leaky_hard_sigmoid,
    upper_leaky_hard_sigmoid,
)
from methods._spd_sites import UnsupportedUse, run_sites
from methods.spd import FAST, PAPER, SPD, coactivation_groups


def paper_mmcs_ml2r(W: torch.Tensor, P: torch.Tensor) -> tuple[float, float]:
    """Signed column-wise MMCS and ML2R of the APD/SPD papers: W [m1, m2], P [C, m1, m2]."""
    W, P = W.double(), P.double()
    cos = torch.einsum("cij,ij->cj", P, W) / (P.norm(dim=1) * W.norm(dim=0) + 1e-12)
    best = cos.argmax(0)
    ratio = P[best, :, torch.arange(W.shape[1])].norm(dim=1) / W.norm(dim=0)
    return float(cos.max(0).values.mean()), float(ratio.mean())


def test_paper_metric_on_hand_case() -> None:
    W = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
    exact = torch.stack([torch.where(torch.arange(3) == c, W, torch.zeros(())) for c in range(3)])
    assert paper_mmcs_ml2r(W, exact) == pytest.approx((1.0, 1.0))
    assert paper_mmcs_ml2r(W, 0.5 * exact) == pytest.approx((1.0, 0.5))
    assert paper_mmcs_ml2r(W, -exact)[0] == pytest.approx(0.0)  # signed: a flipped component does not count


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(3, 4))
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(x @ self.W.T)
        return self.lin(h) + (h @ self.W).sum(-1, keepdim=True)


def test_sites_found_in_forward_order_and_replaceable() -> None:
    torch.manual_seed(0)
    net = _Tied()
    x = torch.randn(5, 4)
    params = {"W": net.W, "lin.weight": net.lin.weight}
    out, sites, inputs = run_sites(net, params, x)
    assert torch.allclose(out, net(x))
    assert [(s.param, s.transposed, s.d_in, s.d_out) for s in sites] == [
        ("W", False, 4, 3), ("lin.weight", False, 3, 2), ("W", True, 3, 4)]
    assert torch.equal(inputs[0], x)
    # replacing site 1 (the nn.Linear) by zero leaves only its bias
    out2, _, _ = run_sites(net, params, x, lambda k, a: torch.zeros(a.shape[0], 2) if k == 1 else None)
    h = torch.relu(x @ net.W.T)
    assert torch.allclose(out2, net.lin.bias + (h @ net.W).sum(-1, keepdim=True))


def test_other_use_of_a_decomposed_parameter_is_an_error() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.W = nn.Parameter(torch.ones(2, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ (2 * self.W)

    net = Scaled()
    with pytest.raises(UnsupportedUse, match="mul"):
        run_sites(net, {"W": net.W}, torch.ones(1, 2))


def test_leaky_hard_sigmoids() -> None:
    x = torch.tensor([-2.0, 0.0, 0.3, 1.0, 3.0])
    assert torch.allclose(lower_leaky_hard_sigmoid(x), torch.tensor([-0.02, 0.0, 0.3, 1.0, 1.0]))
    assert torch.allclose(upper_leaky_hard_sigmoid(x), torch.tensor([0.0, 0.0, 0.3, 1.0, 1.02]))


def _trainer(toy, **kw) -> SPDTrainer:  # noqa: ANN001
    t = toy.target()
    return SPDTrainer(t.model, t.params(), t.sample, SPDConfig(**{"C": 7, "steps": 3, "batch_size": 64, **kw}), 0)


def test_batched_ci_matches_one_mlp_per_subcomponent(toy) -> None:  # noqa: ANN001
    tr = _trainer(toy("tms_5-2"))
    with torch.no_grad():
        tr.spd.b_in.normal_()
        tr.spd.b_out.normal_()
    _, inner = tr.target_pass(tr.sample(16))
    batched = tr.spd.ci_raw(inner)
    m = tr.spd
    for s in range(inner.shape[1]):
        for c in range(inner.shape[2]):
            h = torch.nn.functional.gelu(inner[:, s, c, None] * m.w_in[s, c] + m.b_in[s, c])
            assert torch.allclose(batched[:, s, c], h @ m.w_out[s, c] + m.b_out[s, c], atol=1e-6)


def test_init_projects_target_and_exact_factors_reconstruct(toy) -> None:  # noqa: ANN001
    tms = toy("tms_5-2")
    tr = _trainer(tms, C=5)
    W = tms.model.W.detach()
    U, V = tr.spd.U[0].detach(), tr.spd.V[0].detach()
    assert torch.allclose(V.norm(dim=1), torch.ones(5), atol=1e-5)  # unit-norm read directions
    proj = torch.einsum("ic,ij,cj->c", U / U.norm(dim=0), W, V)  # scaled by the projection of W
    assert torch.allclose(U.norm(dim=0), proj.abs(), atol=1e-5)
    with torch.no_grad():  # the exact per-feature decomposition: mask 1 reproduces the target, faith = 0
        tr.spd.U[0].copy_(W)
        tr.spd.V[0].copy_(torch.eye(5))
    x = tr.sample(32)
    ones = torch.ones(32, 5)
    assert torch.allclose(tr.masked_forward(x, {0: ones, 1: ones}), tms.model(x), atol=1e-6)
    assert float(tr.losses(x)["faith"].detach()) == pytest.approx(0.0, abs=1e-12)
    # masking a feature's subcomponent at both sites removes exactly that feature's path
    mask = ones.clone()
    mask[:, 2] = 0
    keep = (torch.arange(5) != 2).float()
    expected = torch.relu((x * keep) @ W.T @ W * keep + tms.model.b)
    assert torch.allclose(tr.masked_forward(x, {0: mask, 1: mask}), expected, atol=1e-6)


def test_training_lowers_the_loss_and_is_deterministic(toy) -> None:  # noqa: ANN001
    tms = toy("tms_5-2")
    runs = []
    for _ in range(2):
        tr = _trainer(tms, C=10, steps=60, batch_size=256, lr=1e-2)
        x = torch.Generator().manual_seed(5)
        batch = tms.sample(512, x)
        before = float(tr.losses(batch)["total"])
        tr.train()
        after = float(tr.losses(batch)["total"])
        runs.append((before, after, tr.spd.U[0].detach().clone()))
    assert runs[0][1] < 0.5 * runs[0][0]
    assert torch.equal(runs[0][2], runs[1][2])


def test_decompose_contract(toy) -> None:  # noqa: ANN001
    bm = toy("block_mlp")
    dec = SPD(C=8).decompose(bm.target(), Budget(steps=30), seed=0)
    dec.validate(bm.param_shapes())
    assert dec.faithful and dec.record.steps == 30
    x = bm.sample(50, torch.Generator().manual_seed(1))
    attr = dec.attributions(x)
    assert attr.shape == (50, len(dec)) and attr.min() >= 0 and attr.max() <= 1
    assert sorted(i for g in dec.groups for i in g) == list(range(len(dec)))
    with pytest.raises(ValueError, match="NaN"):
        dec.attributions(torch.full_like(x, float("nan")))


def test_bad_hyperparameters_are_clear_errors(toy) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="no hyperparameter"):
        SPD(learning_rate=1)
    with pytest.raises(ValueError, match="preset"):
        SPD(preset="best").hparams("tms_5-2")
    with pytest.raises(ValueError, match="lr"):
        SPD(lr=-1.0).decompose(toy("tms_5-2").target(), Budget(steps=1), seed=0)
    with pytest.raises(ValueError, match="schedule"):
        SPD(schedule="step").decompose(toy("tms_5-2").target(), Budget(steps=1), seed=0)


def test_registered_with_cited_per_model_defaults() -> None:
    assert METHODS.get("spd") is SPD
    assert SPD().hparams("tms_40-10")["C"] == 200 and SPD(preset="paper").hparams("tms_40-10")["steps"] == 40_000
    assert set(PAPER) <= set(FAST)
    for name, hp in PAPER.items():  # the fast preset changes only the training length, lr and batch
        same = {k: v for k, v in hp.items() if k not in ("steps", "lr", "batch_size")}
        assert {k: FAST[name][k] for k in same} == same


def test_coactivation_groups_hand_case() -> None:
    a = torch.tensor([[1, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    # components 0 and 1 co-activate exactly; 2 alone; 3 overlaps 0 on 1 of 3 inputs (Jaccard 1/3)
    assert coactivation_groups(a, 0.8) == [[0, 1], [2], [3]]
    assert coactivation_groups(a, 0.3) == [[0, 1, 3], [2]]


def test_lr_schedules() -> None:
    cfg = SPDConfig(lr=1.0, steps=11, schedule="cosine")
    assert cfg.lr_at(0) == 1.0 and cfg.lr_at(10) == pytest.approx(0.0, abs=1e-12)
    assert cfg.lr_at(5) == pytest.approx(math.cos(math.pi / 4))
    assert SPDConfig(lr=2.0, steps=10, schedule="constant", warmup=0.5).lr_at(0) == pytest.approx(0.4)
