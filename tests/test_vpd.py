"""Tests of the VPD and SPD-main adapters (methods/vpd.py, methods/spd_main.py, methods/_vpd_core.py).

Fast tests check the losses against hand-computed values on a tiny network, the masks' range, the adversary
and determinism; the ``slow`` tests reproduce the success criteria on TMS and the residual MLP
(``pytest -m slow tests/test_vpd.py``; docs/methods/vpd.md).
"""

from __future__ import annotations

import math

import pytest
import torch
from paper_metrics import paper_mmcs_ml2r
from test_spd import _param_stack, identity_ci_error
from torch import nn

from benchmark.method import Budget
from benchmark.registry import METHODS
from methods._vpd_core import VPDConfig, VPDTrainer, lower_leaky

pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(nn.Module):
    """y = relu(x W1^T) W2^T: two decomposed matrices, two sites."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W1 = nn.Parameter(torch.randn(3, 4, generator=g))
        self.W2 = nn.Parameter(torch.randn(2, 3, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W1.T) @ self.W2.T


def _sample(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(n, 4, generator=g)


def _tiny(**kw) -> tuple[Tiny, VPDTrainer]:  # noqa: ANN003
    net = Tiny()
    params = {"W1": net.W1, "W2": net.W2}
    cfg = VPDConfig(**{"C": 3, "ci_hidden": 5, "steps": 10, "batch_size": 8, "warmup_steps": 0, **kw})
    return net, VPDTrainer(net, params, _sample, cfg, seed=0)


def test_lower_leaky_forward_and_sign_gated_backward() -> None:
    z = torch.tensor([-1.0, -1.0, 0.5, 2.0], requires_grad=True)
    y = lower_leaky(z)
    assert torch.equal(y.detach(), torch.tensor([0.0, 0.0, 0.5, 1.0]))
    y.backward(torch.tensor([-2.0, 3.0, 4.0, 5.0]))
    # below 0: 0.01 x the gradient only where it is negative; inside: passed; above 1: nothing
    assert torch.allclose(z.grad, torch.tensor([-0.02, 0.0, 4.0, 0.0]))


def test_masked_forward_matches_hand_computation() -> None:
    net, tr = _tiny()
    x = _sample(6, torch.Generator().manual_seed(1))
    m = torch.rand(6, 2, 3, generator=torch.Generator().manual_seed(2))
    d = torch.rand(6, 2, generator=torch.Generator().manual_seed(3))
    resid = tr.spd.residuals(tr.W)
    got = tr.masked_forward(x, m, d, None, resid)
    U1, V1, U2, V2 = tr.spd.U[0], tr.spd.V[0], tr.spd.U[1], tr.spd.V[1]
    h = torch.relu(((x @ V1.T) * m[:, 0]) @ U1.T + d[:, :1] * (x @ (net.W1 - U1 @ V1).T))
    want = ((h @ V2.T) * m[:, 1]) @ U2.T + d[:, 1:] * (h @ (net.W2 - U2 @ V2).T)
    assert torch.allclose(got, want, atol=1e-6)
    # with all masks 1 the subcomponents plus the residual are the weights: the target's output
    assert torch.allclose(tr.masked_forward(x, torch.ones_like(m), torch.ones_like(d), None, resid), net(x), atol=1e-5)
    # a route that sends row 0 through no site keeps that row's output exact
    route = torch.ones(6, 2, dtype=torch.bool)
    route[0] = False
    out = tr.masked_forward(x, m, d, route, resid)
    assert torch.allclose(out[0], net(x)[0], atol=1e-6) and torch.allclose(out[1:], want[1:], atol=1e-6)


def test_minimality_and_faithfulness_terms_match_hand_computation() -> None:
    net, tr = _tiny(p_start=2.0, p_end=0.4, steps=5, adv_coeff=0.0, stoch_coeff=1.0)
    x = _sample(8, torch.Generator().manual_seed(4))
    _, inputs = tr.target_pass(x)
    raw = tr.raw(inputs).detach()
    for step, p in [(0, 2.0), (2, 1.2), (4, 0.4)]:  # p(t) linear from 2.0 to 0.4 over the steps
        terms = tr.losses(x, step)
        g_up = raw.clamp(min=0).where(raw <= 1, 1 + 0.01 * (raw - 1))
        s = ((g_up + 1e-12) ** p).sum(0)
        assert float(terms["imp"].detach()) == pytest.approx(float(s.sum() / 8), rel=1e-5)
        assert float(terms["freq"].detach()) == pytest.approx(float((s * torch.log2(1 + s)).sum() / 8), rel=1e-5)
    n = net.W1.numel() + net.W2.numel()
    faith = sum(((W - U @ V) ** 2).sum() for W, U, V in zip(tr.W, tr.spd.U, tr.spd.V, strict=True)) / n
    assert float(terms["faith"].detach()) == pytest.approx(float(faith.detach()), rel=1e-5)


def test_adversary_raises_the_loss_it_maximises_and_sources_stay_in_range() -> None:
    _, tr = _tiny(adv_coeff=1.0, stoch_coeff=0.0, adv_ascents=0, adv_lr=0.05, adv_warmup=0.0)
    x = _sample(8, torch.Generator().manual_seed(5))
    tr.losses(x, 0)  # creates the persistent sources
    target, inputs = tr.target_pass(x)
    g = tr.raw(inputs).clamp(0, 1).detach()
    resid = [R.detach() for R in tr.spd.residuals(tr.W)]

    def loss_at(src: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(
            tr.masked_forward(x, g + (1 - g) * src[..., :3], src[..., 3], None, resid), target
        )

    before = float(loss_at(tr.sources))
    for step in range(30):
        src = tr.sources.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_at(src), src)
        tr._ascend(grad, step)
        assert float(tr.sources.min()) >= 0 and float(tr.sources.max()) <= 1
    assert float(loss_at(tr.sources)) > 1.5 * before


def test_training_is_deterministic_and_masks_in_range(toy) -> None:  # noqa: ANN001
    tms = toy("tms_5-2")
    runs = []
    for _ in range(2):
        t = tms.target()
        cfg = VPDConfig(C=6, ci_hidden=8, steps=15, batch_size=64, warmup_steps=5)
        tr = VPDTrainer(t.model, t.params(), t.sample, cfg, seed=3)
        log = tr.train(log_every=1)
        assert log.steps == 15 and all(math.isfinite(h["total"]) for h in log.history)
        assert float(tr.sources.min()) >= 0 and float(tr.sources.max()) <= 1
        g = tr.ci_values(tms.sample(50, torch.Generator().manual_seed(0)))
        assert float(g.min()) >= 0 and float(g.max()) <= 1
        runs.append((tr.spd.U[0].detach().clone(), tr.sources.clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("name", ["vpd", "spd-main"])
def test_decompose_contract(toy, name: str) -> None:  # noqa: ANN001
    bm = toy("block_mlp")
    dec = METHODS.get(name)(C=8, n_eval=2000).decompose(bm.target(), Budget(steps=10), seed=0)
    dec.validate(bm.param_shapes())
    assert dec.faithful and dec.importances and dec.record.steps == 10
    x = bm.sample(50, torch.Generator().manual_seed(1))
    attr = dec.attributions(x)
    assert attr.shape == (50, len(dec)) and attr.min() >= 0 and attr.max() <= 1
    hp = dec.record.hparams
    assert hp["C"] == 8 and hp["imp_coeff"] > 0  # the blind rule resolved and recorded


def test_bad_hyperparameters_are_clear_errors(toy) -> None:  # noqa: ANN001
    t = toy("tms_5-2").target()
    for bad in ({"ci": "global"}, {"routing": "some"}, {"C": 0}, {"adv_beta1": 1.0}, {"imp_coeff": float("nan")}):
        with pytest.raises(ValueError, match="vpd"):
            METHODS.get("vpd")(**bad).decompose(t, Budget(steps=1), seed=0)
    with pytest.raises(ValueError, match="preset"):
        METHODS.get("vpd")(preset="huge").hparams("tms_5-2")


def test_spd_main_keeps_spd_settings_and_adds_main_branch_changes() -> None:
    from methods.spd import FAST

    hp = METHODS.get("spd-main")().hparams("tms_40-10")
    assert hp["C"] == FAST["tms_40-10"]["C"] and hp["imp_coeff"] == FAST["tms_40-10"]["imp_coeff"]
    assert hp["p_start"] == hp["p_end"] == FAST["tms_40-10"]["pnorm"]
    assert hp["delta"] and hp["faith_coeff"] == 0 and hp["warmup_steps"] == 200 and hp["adv_coeff"] == 0
    blind = METHODS.get("spd-main")(tuned=False).hparams("tms_40-10")
    assert blind["C"] is None and blind["imp_coeff"] is None  # the blind rule, not the toy's setting


# --------------------------------------------------------------------------------------------------------
# Reproduction (slow): the bar on TMS and the residual MLP (docs/methods/vpd.md has the measurements)
# --------------------------------------------------------------------------------------------------------


def _run(toy, seed: int, method: str = "vpd", **kw):  # noqa: ANN001, ANN202
    return METHODS.get(method)(**kw).decompose(toy.target(), Budget(), seed=seed)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tms_5-2", "tms_40-10"])
def test_vpd_tms_every_feature_in_its_own_subcomponent(toy, name: str) -> None:  # noqa: ANN001
    """MMCS 1.000 and ML2R within 0.97-1.03 on at least 4 of seeds 0-4."""
    tms = toy(name)
    results = []
    for seed in range(5):
        dec = _run(tms, seed)
        idx, P = _param_stack(dec, "W")
        results.append((*paper_mmcs_ml2r(tms.model.W.detach(), P), len(idx)))
    ok = [m >= 0.9995 and 0.97 <= r <= 1.03 for m, r, _ in results]
    print(f"vpd {name} success {sum(ok)}/5:", [(round(m, 4), round(r, 3), k) for m, r, k in results])
    assert sum(ok) >= 4, results


@pytest.mark.slow
def test_vpd_resid_mlp1_one_w_in_subcomponent_per_feature(toy) -> None:  # noqa: ANN001
    """SPD's reproduction bar on W_in: IdentityCIError at most n_features / 10 on one-hot inputs (measured seed 0
    at the fast preset: 0, 100 pieces, 982 CPU-s). W_out is not checked: its DenseCIPattern error was 155 against
    50 hidden units, not SPD's pattern (docs/methods/vpd.md)."""
    rm = toy("resid_mlp1")
    dec = _run(rm, 0)
    ci = dec.attributions(0.75 * torch.eye(rm.n_features))
    win, _ = _param_stack(dec, "layers.0.W_in")
    assert identity_ci_error(ci[:, win]) <= rm.n_features // 10
