"""Tests of the SPD adapter (methods/spd.py, methods/_spd_core.py, methods/_spd_sites.py).

Fast tests check the parts against hand-computed cases; the ``slow`` tests reproduce the SPD paper
(arXiv:2506.20790, section 4 and appendix) on the toy models: run them with ``pytest -m slow``.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from paper_metrics import paper_mmcs_ml2r
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
from methods.spd import FAST, PAPER, SPD


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
        ("W", False, 4, 3),
        ("lin.weight", False, 3, 2),
        ("W", True, 3, 4),
    ]
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


def test_chunked_ci_matches_single_tensor_path(toy, monkeypatch) -> None:  # noqa: ANN001
    """Past CI_CHUNK elements the CI MLPs run in batch chunks, recomputed in backward: same values, same grads."""
    import methods._spd_core as core

    tr = _trainer(toy("tms_5-2"), C=20)
    with torch.no_grad():
        tr.spd.b_in.normal_()
        tr.spd.b_out.normal_()
    inner = tr.target_pass(tr.sample(300))[1].detach()

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        tr.spd.zero_grad()
        raw = tr.spd.ci_raw(inner)
        raw.sin().sum().backward()
        return raw.detach(), [p.grad.clone() for p in (tr.spd.w_in, tr.spd.b_in, tr.spd.w_out, tr.spd.b_out)]

    whole, g_whole = run()
    monkeypatch.setattr(core, "CI_CHUNK", 2 * 20 * 16 * 7)  # 7 rows a chunk, the last one shorter
    chunked, g_chunked = run()
    assert torch.equal(whole, chunked)
    for a, b in zip(g_whole, g_chunked, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


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
        tr = _trainer(tms, C=6, steps=40, batch_size=128, lr=2e-2)
        x = torch.Generator().manual_seed(5)
        batch = tms.sample(512, x)
        before = float(tr.losses(batch)["total"].detach())
        tr.train()
        after = float(tr.losses(batch)["total"].detach())
        runs.append((before, after, tr.spd.U[0].detach().clone()))
    assert runs[0][1] < 0.5 * runs[0][0]
    assert torch.equal(runs[0][2], runs[1][2])


def test_decompose_contract(toy) -> None:  # noqa: ANN001
    bm = toy("block_mlp")
    dec = SPD(C=8, n_eval=2000).decompose(bm.target(), Budget(steps=20), seed=0)
    dec.validate(bm.param_shapes())
    assert dec.faithful and dec.record.steps == 20
    x = bm.sample(50, torch.Generator().manual_seed(1))
    attr = dec.attributions(x)
    assert attr.shape == (50, len(dec)) and attr.min() >= 0 and attr.max() <= 1
    assert dec.groups is None  # the engine groups SPD's subcomponents, not the adapter
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
        if name == "resid_mlp2":  # and there takes the paper text's beta3 instead of the spd-paper config's
            assert (hp["imp_coeff"], FAST[name]["imp_coeff"]) == (2e-5, 1e-5)
            same["imp_coeff"] = 1e-5
        assert {k: FAST[name][k] for k in same} == same


def test_lr_schedules() -> None:
    cfg = SPDConfig(lr=1.0, steps=11, schedule="cosine")
    assert cfg.lr_at(0) == 1.0 and cfg.lr_at(10) == pytest.approx(0.0, abs=1e-12)
    assert cfg.lr_at(5) == pytest.approx(math.cos(math.pi / 4))
    assert SPDConfig(lr=2.0, steps=10, schedule="constant", warmup=0.5).lr_at(0) == pytest.approx(0.4)


# --------------------------------------------------------------------------------------------------------
# Paper reproduction (slow): SPD paper section 4 / appendix; numbers in docs/reference/apd_spd.md 2.1.
# --------------------------------------------------------------------------------------------------------

DEVICE = os.environ.get("PDBENCH_TEST_DEVICE", "cpu")  # the slow reproduction tests' device


def _run(toy, seed: int = 0, **kw):  # noqa: ANN001, ANN202
    """A default-budget run on one intra-op thread, as the runner's workers (and the measurements in
    docs/methods/spd.md) do: the thread count changes float rounding, and with it a chaotic training run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return SPD(**kw).decompose(toy.target(), Budget(), seed=seed, device=DEVICE)
    finally:
        torch.set_num_threads(before)


def _param_stack(dec, name: str) -> tuple[list[int], torch.Tensor]:  # noqa: ANN001
    idx = [i for i in range(len(dec)) if name in dec.components[i]]
    return idx, torch.stack([dec.dense(i)[name] for i in idx])


def identity_ci_error(ci: torch.Tensor, tol: float = 0.1) -> int:
    """SPD main's IdentityCIError on one-hot inputs ``ci [n_features, C]``: Hungarian-permute the columns,
    then count off-diagonal entries above tol and diagonal entries below 1 - tol (0 for a perfect run)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-ci.numpy())
    diag = ci[rows, cols]
    off = ci.clone()
    off[rows, cols] = 0
    return int((off > tol).sum() + (diag < 1 - tol).sum())


_ID_40_10 = pytest.param(
    "tms_40-10-id",
    marks=pytest.mark.xfail(
        strict=True,
        reason="measured seed 0 (6,000 steps, 1,247 s on one core): MMCS 1.0000, ML2R 1.016, 40 W pieces, "
        "but 11 identity pieces, not 10: ten of norm 1.00-1.09 plus one of 0.043 causally important on 0.1% of inputs; "
        "their sum is I within 0.062, not 0.05 (docs/methods/spd.md)",
    ),
)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tms_5-2", "tms_40-10", "tms_5-2-id", _ID_40_10])
def test_reproduces_tms(toy, name: str) -> None:  # noqa: ANN001
    """Paper: MMCS 1.000 and ML2R 0.993 / 1.010 / 0.992 / 1.031 (5-2, 40-10, 5-2-id, 40-10-id)."""
    tms = toy(name)
    dec = _run(tms)
    W = tms.model.W.detach()
    idx, P = _param_stack(dec, "W")
    mmcs, ml2r = paper_mmcs_ml2r(W, P)
    assert mmcs >= 0.999 and 0.98 <= ml2r <= 1.04, (mmcs, ml2r)
    n_feat = W.shape[1]
    ci = dec.attributions(0.75 * torch.eye(n_feat))  # the paper's single-feature CI matrix
    assert identity_ci_error(ci[:, idx]) <= max(1, n_feat // 10)
    # one subcomponent per feature; the others negligible or never causally important (a stray split piece
    # in 1 of 10 features is tolerated: the paper's runs also show a few, issue #143 of goodfire-ai/spd)
    assert n_feat <= len(idx) <= n_feat + n_feat // 10
    if name.endswith("-id"):  # the identity: exactly m1 dense pieces that sum to I (paper: "only m1 subcomponents")
        m1 = W.shape[0]
        hid, H = _param_stack(dec, "hidden_layer")
        assert len(hid) == m1
        assert torch.allclose(H.sum(0), torch.eye(m1), atol=0.05)
        # always on where the identity matters: on every one-hot input the pieces with CI > 0.5 pass the hidden
        # vector W[:, c] through unchanged. A piece whose read direction is orthogonal to W[:, c] is (rightly)
        # not causally important for feature c, so a piece may be off on a few features (measured: each of the
        # two pieces of TMS 5-2-id is off on one of the five), but it must be on for most of them.
        on = ci[:, hid] > 0.5
        for c in range(n_feat):
            passed = sum((H[k] @ W[:, c] for k in range(m1) if on[c, k]), torch.zeros(m1))
            assert torch.allclose(passed, W[:, c], atol=0.1 * float(W[:, c].norm())), c
        assert (on.float().mean(0) >= 0.5).all(), on.float().mean(0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tms_5-2", "tms_40-10"])
def test_tms_success_rate_over_seeds(toy, name: str) -> None:  # noqa: ANN001
    """Reference code: 1 of 2 seeds split a TMS 5-2 feature (docs/reference/apd_spd.md 5); the SPD authors' sweeps
    broke 13 of 90 TMS 5-2 runs and 4-6 of 19 TMS 40-10 runs. Ours over 5 seeds, with the issue's bar (MMCS >= 0.999,
    ML2R >= 0.99) on at least 4 (measured: 4 of 5 on TMS 5-2, 5 of 5 on TMS 40-10; docs/methods/spd.md)."""
    tms = toy(name)
    results = []
    for seed in range(5):
        _, P = _param_stack(_run(tms, seed), "W")
        results.append(paper_mmcs_ml2r(tms.model.W.detach(), P))
    ok = [m >= 0.999 and 0.99 <= r <= 1.04 for m, r in results]
    print(f"{name} success {sum(ok)}/5:", [(round(m, 4), round(r, 3)) for m, r in results])
    assert sum(ok) >= 4, results


def dense_ci_error(ci: torch.Tensor, k: int, tol: float = 0.1) -> int:
    """SPD main's DenseCIPattern error on one-hot inputs ``ci [n_features, C]``: the k columns of most CI mass must
    each reach 1 - tol on some input, the others must stay at or below tol everywhere (0 for a perfect run)."""
    order = ci.sum(0).argsort(descending=True)
    top, rest = ci[:, order[:k]], ci[:, order[k:]]
    return int((1 - (top >= 1 - tol).sum(0)).clamp(min=0).sum() + (rest > tol).sum())


_NEEDS_GPU = pytest.mark.skipif(
    DEVICE == "cpu",
    reason="paper-scale run: measured 2.1 s per step (3L, C 500, d_gate 128) at batch 256 on one CPU core, 12 h "
    "for 20k steps; set PDBENCH_TEST_DEVICE=cuda on a GPU machine",
)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resid_mlp1", "resid_mlp2", pytest.param("resid_mlp3", marks=_NEEDS_GPU)])
def test_reproduces_resid_mlp(toy, name: str) -> None:  # noqa: ANN001
    """Paper section 4.3-4.4: W_in in one subcomponent per feature (the identity CI pattern on one-hot inputs
    x_i = 0.75, in every layer); W_out in d_mlp subcomponents, "the correct number", many of them causally
    important on each one-hot input (APD's per-feature W_out would have about one), checked with SPD main's
    IdentityCIError / DenseCIPattern(k = d_mlp) metrics."""
    rm = toy(name)
    dec = _run(rm)
    n_feat, n_layers = rm.n_features, rm.n_layers
    ci = dec.attributions(0.75 * torch.eye(n_feat))
    for layer in range(n_layers):
        win, _ = _param_stack(dec, f"layers.{layer}.W_in")
        assert identity_ci_error(ci[:, win]) <= n_feat // 10, layer
    d_mlp = n_layers * rm.d_mlp  # W_out of all layers together: one rank-d_mlp component
    wout = sorted(i for layer in range(n_layers) for i in _param_stack(dec, f"layers.{layer}.W_out")[0])
    print(
        f"{name}: {len(wout)} W_out subcomponents, dense CI error {dense_ci_error(ci[:, wout], d_mlp)}, "
        f"active (CI > 0.5) per one-hot input {(ci[:, wout] > 0.5).sum(1).float().mean():.1f}"
    )
    assert 0.9 * d_mlp <= len(wout) <= 1.1 * d_mlp
    assert dense_ci_error(ci[:, wout], d_mlp) <= d_mlp // 10
    assert int((ci[:, wout] > 0.5).sum(1).min()) >= d_mlp // 10


def test_export_keeps_alive_subcomponents_of_non_negligible_norm(toy) -> None:  # noqa: ANN001
    from methods._spd_core import TrainLog
    from methods.spd import export_subcomponents

    tms = toy("tms_5-2")
    tr = _trainer(tms, C=7)
    W = tms.model.W.detach()
    with torch.no_grad():
        tr.spd.U[0].zero_()
        tr.spd.U[0][:, :5] = W
        tr.spd.V[0].zero_()
        tr.spd.V[0][:5, :5] = torch.eye(5)
        tr.spd.U[0][:, 5] = 1e-4 * W[:, 0]  # negligible norm
        tr.spd.V[0][5, 0] = 1.0
        tr.spd.U[0][:, 6] = W[:, 1]  # large, but never causally important
        tr.spd.V[0][6, 1] = 1.0
        tr.spd.w_out.zero_()
        tr.spd.b_out.fill_(2.0)  # CI = 1 everywhere ...
        tr.spd.b_out[:, 6] = -2.0  # ... except subcomponent 6
    hp = {**SPD().hparams("tms_5-2"), "n_eval": 500}
    dec = export_subcomponents(tr, hp, TrainLog(), seed=0)
    assert len(dec) == 5
    assert torch.allclose(torch.stack([dec.dense(i)["W"] for i in range(5)]).sum(0), W)
    assert dec.record.extra["dropped_norm"] == pytest.approx(float(W[:, 1].norm()), rel=1e-4)
