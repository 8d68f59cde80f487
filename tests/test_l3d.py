"""L3D (Chrisman, Bushnaq, Sharkey 2025, arXiv:2504.00194): unit tests and slow paper reproductions.

The paper's own TMS 5-2 (tied training, untied W_in, W_out, b decomposed; docs/reference/l3d.md 2.1) is not the
benchmark's APD/SPD ``tms_5-2``, so it is built here. The circuit toys come from the zoo (``tmcs_10-5-10``,
``higher_rank_30-10-30``); for the reproductions L3D decomposes all their tensors, bias included, as the paper does.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchmark.decomposition import DecompositionError, LowRank
from benchmark.method import Budget
from methods._l3d_grads import per_sample_grads, per_sample_grads_loop
from methods._l3d_train import GradientSource, L3DConfig, batch_topk, recon_loss, train_l3d
from methods._l3d_tucker import TuckerBank
from methods.l3d import L3D, intervene, sample_data

pytestmark = pytest.mark.usefixtures("one_thread")

# ---------------------------------------------------------------------------------------------------------------
# small helpers


class TwoLayer(nn.Module):
    def __init__(self, g: torch.Generator):
        super().__init__()
        self.l1 = nn.Linear(4, 6)
        self.l2 = nn.Linear(6, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.tanh(self.l1(x)))


def sparse_inputs(n: int, n_features: int, p: float, g: torch.Generator, group: int = 1) -> torch.Tensor:
    """L3D's GenerateTMSInputs / GenerateCorrelatedData: U[0,1) values, Bernoulli(p) per group, no zero rows."""

    def draw(k: int, gen: torch.Generator) -> torch.Tensor:
        on = (torch.rand(k, n_features // group, generator=gen) < p).repeat_interleave(group, dim=1)
        return torch.rand(k, n_features, generator=gen) * on

    return sample_data(draw, n, g, drop_zero=True)


# ---------------------------------------------------------------------------------------------------------------
# per-sample gradients


def test_vectorised_per_sample_grads_match_loop_and_jacobian_path():
    g = torch.Generator().manual_seed(0)
    model = TwoLayer(g)
    params = {n: p.detach() for n, p in model.named_parameters()}
    x = torch.randn(9, 4, generator=g)
    with torch.no_grad():
        y_ref = model(x)[torch.randint(0, 9, (9,), generator=g)]
    vec = per_sample_grads(model, params, x, y_ref)
    loop = per_sample_grads_loop(model, params, x, y_ref)
    for n in params:
        assert vec[n].shape == (9, *params[n].shape)
        torch.testing.assert_close(vec[n], loop[n], rtol=1e-5, atol=1e-6)
    # the cached-Jacobian path gives the same gradients as vmap(grad), for both paths of GradientSource
    ref = torch.randint(0, 9, (9,), generator=g)
    idx = torch.arange(9)
    jac = GradientSource(model, params, x, jacobian_limit=1e9)
    direct = GradientSource(model, params, x, jacobian_limit=0)
    assert jac.J is not None and direct.J is None
    torch.testing.assert_close(jac.batch(idx, ref), direct.batch(idx, ref), rtol=1e-5, atol=1e-6)
    # the paper's "mean output" reference option: the same gradients against the data set's mean output
    mean = GradientSource(model, params, x, jacobian_limit=1e9, reference="mean")
    with torch.no_grad():
        y_mean = model(x).mean(0).expand(9, -1)
    expect_mean = per_sample_grads(model, params, x, y_mean)
    flat_mean = torch.cat([expect_mean[n].reshape(9, -1) for n in params], dim=1)
    torch.testing.assert_close(mean.batch(idx, ref), flat_mean, rtol=1e-5, atol=1e-6)
    # and a hand-derived case: D = ||W x - y||^2 / (2 n_o) on a linear map gives (W x - y) x^T / n_o
    lin = nn.Linear(4, 3, bias=False)
    W = {"weight": lin.weight.detach()}
    yl = torch.randn(9, 3, generator=g)
    expect = torch.einsum("bo,bi->boi", x @ W["weight"].T - yl, x) / 3
    torch.testing.assert_close(per_sample_grads(lin, W, x, yl)["weight"], expect, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Tucker subnetworks, BatchTopK, loss


def test_tucker_dense_is_the_tucker_product_and_normalises():
    g = torch.Generator().manual_seed(1)
    bank = TuckerBank({"M": (4, 3), "v": (5,)}, {"M": (2, 2), "v": (1,)}, n_v=3, generator=g)
    dense = bank.dense()
    G, U1, U2 = bank.cores[0].detach(), bank.factors[0][0].detach(), bank.factors[0][1].detach()
    for k in range(3):
        manual = sum(G[a, b, k] * torch.outer(U1[a, :, k], U2[b, :, k]) for a in range(2) for b in range(2))
        torch.testing.assert_close(dense["M"][k], manual)
        left, right = bank.low_rank(k, "M")
        torch.testing.assert_close(left @ right, manual)
        torch.testing.assert_close(dense["v"][k], bank.cores[1][0, k] * bank.factors[1][0][0, :, k])
    assert bank.flat().shape == (3, 12 + 5)
    bank.normalise("l2")
    torch.testing.assert_close(bank.flat().norm(dim=1), torch.ones(3))
    for _ in range(60):  # the public code's rule converges to sum_t ||v_t||_F = 1 (docs/reference/l3d.md 1.7)
        bank.normalise("code")
    torch.testing.assert_close(bank.tensor_norms().sum(1), torch.ones(3), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="unknown normalisation"):
        bank.normalise("l1")
    with pytest.raises(ValueError, match="one entry per mode"):
        TuckerBank({"M": (4, 3)}, {"M": (2,)}, n_v=2, generator=g)


def test_batch_topk_keeps_the_codes_count_of_largest_entries():
    c = torch.randn(32, 5, generator=torch.Generator().manual_seed(2))
    mask = batch_topk(c, 0.1)
    assert int(mask.sum()) == int(0.1 * 160) + 1  # threshold at sorted[int(k B n_v)], kept if >=
    kept = c.abs()[mask.bool()]
    assert kept.min() >= c.abs()[~mask.bool()].max()
    assert int(batch_topk(c, 0.999).sum()) == 160


def test_reconstruction_loss_hand_computed():
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    g_hat = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert float(recon_loss(g, g_hat)) == pytest.approx(4 / 5)


# ---------------------------------------------------------------------------------------------------------------
# the adapter on the benchmark's models


@pytest.fixture(scope="module")
def tms_run(toy):
    """L3D on the benchmark's tms_5-2 for 1200 steps (shared by the tests below)."""
    tms = toy("tms_5-2")
    target = tms.target()
    return tms, target, L3D(n_refs=4).decompose(target, Budget(steps=1200), seed=0)


def test_adapter_recovers_tms_features_and_honours_budget(tms_run):
    tms, _, dec = tms_run
    assert dec.record.steps == 1200
    dec.validate(tms.param_shapes())
    assert not dec.faithful and len(dec) == 5
    from benchmark.scoring import score

    s = score(tms, dec, ["hungarian"])
    assert s["hungarian"] > 0.95, s  # each subnetwork lines up with one feature's column of W
    flat = dec.flat(tms.spec.decomposed, tms.param_shapes())
    torch.testing.assert_close(flat.norm(dim=1), torch.ones(5, dtype=torch.float64), rtol=1e-5, atol=1e-5)


def test_same_seed_same_result_and_lowrank_components(toy):
    tms = toy("tms_40-10")
    runs = [L3D(n_v=6, n_samples=200).decompose(tms.target(), Budget(steps=20), seed=3) for _ in range(2)]
    other = L3D(n_v=6, n_samples=200).decompose(tms.target(), Budget(steps=20), seed=4)
    shapes = tms.param_shapes()
    a, b, c = (r.flat(tms.spec.decomposed, shapes) for r in (*runs, other))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert isinstance(runs[0].components[0]["W"], LowRank)  # rank 1 on a 10x40 matrix: factors are smaller


def test_attributions_are_the_papers_impact_and_intervention_moves_weights(tms_run):
    tms, target, dec = tms_run
    x = tms.sample(64, torch.Generator().manual_seed(5))
    att = dec.attributions(x)
    assert att.shape == (64, 5) and (att >= 0).all()
    # brute force: I(x_i, v_k) = mean_j |V^in_k . grad_W D(f(x_i), y_j)| with per-sample gradients
    model = target.model
    params = {"W": model.W.detach()}
    enc = dec.encoder["W"].flatten(1)  # [5, 10]
    coeffs = [per_sample_grads(model, params, x, y.expand(64, -1))["W"].flatten(1) @ enc.T for y in dec.references]
    torch.testing.assert_close(att, torch.stack(coeffs).abs().mean(0), rtol=1e-4, atol=1e-7)
    # inputs that use feature c have their largest impact on a subnetwork aligned with feature c
    one_hot = torch.eye(5) * 0.8
    top = dec.attributions(one_hot).argmax(1)
    cols = dec.flat(("W",), tms.param_shapes()).view(5, 2, 5).pow(2).sum(1).argmax(1)  # feature of each unit
    assert len(set(top.tolist())) == 5 and cols[top].tolist() == [0, 1, 2, 3, 4]
    out_moved = dec.intervention(x, 2, 0.3)
    comp = dec.dense(2)
    with torch.no_grad():
        W = model.W + 0.3 * comp["W"]
        expect = torch.relu(x @ W.T @ W + model.b)
    torch.testing.assert_close(out_moved, expect)
    torch.testing.assert_close(intervene(model, dec.components[2], 0.3, x), expect)
    assert torch.equal(model.W, tms.model.W)  # the intervention does not change the weights


def test_bad_input_is_rejected(toy):
    tms = toy("tms_5-2")
    with pytest.raises(ValueError, match="no hyperparameter"):
        L3D(n_vv=3)
    with pytest.raises(ValueError, match="norm"):
        L3D(norm="l1").decompose(tms.target(), Budget(steps=2), seed=0)
    with pytest.raises(ValueError, match="reference"):
        L3D(reference="uniform").decompose(tms.target(), Budget(steps=2), seed=0)
    with pytest.raises(ValueError, match="k"):
        L3D(k=0.0).decompose(tms.target(), Budget(steps=2), seed=0)
    target = tms.target()
    target.sample = lambda n, g: torch.full((n, 5), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        L3D().decompose(target, Budget(steps=2), seed=0)
    dec = L3D().decompose(tms.target(), Budget(steps=2), seed=0)
    with pytest.raises(ValueError, match="NaN"):
        dec.attributions(torch.full((3, 5), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        intervene(tms.model, {"W": torch.zeros(3, 3)}, 0.1, torch.zeros(2, 5))
    dec.components[0]["W"] = torch.zeros(3, 3)
    with pytest.raises(DecompositionError):
        dec.validate(tms.param_shapes())
    with pytest.raises(ValueError, match="not in the model"):
        train_l3d(tms.model, ("nope",), torch.zeros(4, 5), L3DConfig(), seed=0)


ZOO = [
    "block_mlp",
    "parallel_tms",
    "shared_neurons",
    "tms_5-2",
    "tms_40-10",
    "tms_5-2-id",
    "tmcs_10-5-10",
    "higher_rank_30-10-30",
    "square_mlp",
]


@pytest.mark.parametrize("name", ZOO)
def test_runs_on_every_zoo_model(toy, name):
    """A few steps on each toy model of tiers 0-3: valid components of unit norm, attributions, intervention."""
    from benchmark.registry import TOY_MODELS

    if name not in TOY_MODELS.names():
        pytest.skip(f"toy model {name} is not registered")
    model = toy(name)
    dec = L3D(n_samples=64, n_refs=2).decompose(model.target(), Budget(steps=3), seed=0)
    shapes = model.param_shapes()
    dec.validate(shapes)
    assert len(dec) == L3D().hparams(name)["n_v"]
    flat = dec.flat(model.spec.decomposed, shapes)
    torch.testing.assert_close(flat.norm(dim=1), torch.ones(len(dec), dtype=torch.float64), rtol=1e-4, atol=1e-4)
    x = model.sample(8, torch.Generator().manual_seed(0))
    att = dec.attributions(x)
    assert att.shape == (8, len(dec)) and torch.isfinite(att).all()
    assert dec.intervention(x, 0, 0.1).shape == model.model(x).shape


# ---------------------------------------------------------------------------------------------------------------
# slow: paper reproductions (arXiv:2504.00194 s3, App. B.3; numbers in docs/methods/l3d.md)


class UntiedTMS(nn.Module):
    """x_hat = ReLU(x W_in W_out + b), the model L3D decomposes for TMS (AutoencoderParallel, n_networks=1)."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.W_in = nn.Parameter(W.clone())
        self.W_out = nn.Parameter(W.T.clone())
        self.b = nn.Parameter(b.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_in @ self.W_out + self.b)


def train_paper_tms(seed: int = 42, epochs: int = 1000) -> tuple[torch.Tensor, torch.Tensor, int]:
    """L3D's tied TMS 5-2 (App. B.2): 10,000 inputs, AdamW lr 1e-3 wd 1e-3, MSE, effective batch 128 (32 x 4
    processes), 1000 epochs, Xavier-normal W, b = 0. Seeds after ``seed`` are tried until no feature is lost."""
    for s in range(seed, seed + 10):
        g = torch.Generator().manual_seed(s)
        W = (torch.randn(5, 2, generator=g) * math.sqrt(2 / 7)).requires_grad_(True)
        b = torch.zeros(5, requires_grad=True)
        X = sparse_inputs(10_000, 5, 0.05, g)
        opt = torch.optim.AdamW([W, b], lr=1e-3, weight_decay=1e-3)
        for _ in range(epochs):
            perm = torch.randperm(10_000, generator=g)
            for i in range(0, 10_000, 128):
                x = X[perm[i : i + 128]]
                loss = ((torch.relu(x @ W @ W.T + b) - x) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        norms = W.detach().norm(dim=1)
        if norms.min() > 0.5 * norms.median():
            return W.detach(), b.detach(), s
    raise RuntimeError("no healthy TMS in 10 seeds")


@pytest.mark.slow
def test_paper_tms_5_2_one_subnetwork_per_feature():
    """Paper s3.1 / Fig S2: 5 rank-1 subnetworks, each the x_i -> x_hat_i circuit; reconstruction error 19%."""
    torch.manual_seed(0)
    W, b, used_seed = train_paper_tms()
    model = UntiedTMS(W, b)
    X = sparse_inputs(1000, 5, 0.05, torch.Generator().manual_seed(1))
    fit = train_l3d(model, ("W_in", "W_out", "b"), X, L3DConfig(n_v=5, rank=1), seed=0)
    v = {k: t.detach() for k, t in fit.decoder.dense().items()}
    feature = v["b"].abs().argmax(dim=1)  # the notebooks' rule: argmax_i |v_k[b]_i|
    enc_cos = torch.stack(
        [torch.nn.functional.cosine_similarity(v["W_in"][k, feature[k]], W[feature[k]], dim=0).abs() for k in range(5)]
    )
    row_mass = torch.stack([v["W_in"][k, feature[k]].pow(2).sum() / v["W_in"][k].pow(2).sum() for k in range(5)])
    print(
        f"\n[l3d tms_5-2 paper] toy seed {used_seed}; recon error {fit.final_loss:.4f} (paper 0.19); "
        f"features {feature.tolist()}; |cos| encoder row vs W row {enc_cos.tolist()}; "
        f"row mass {row_mass.tolist()}; P_act {fit.p_act}"
    )
    assert sorted(feature.tolist()) == [0, 1, 2, 3, 4]  # each subnetwork matches a different feature
    assert (enc_cos > 0.9).all() and (row_mass > 0.8).all()  # "nearly perfectly parallel" (Fig S2)
    assert 0.12 <= fit.final_loss <= 0.26  # paper 0.19; tolerance +-0.07 (one run, our own retrained toy)


def tmcs_correlation(v: dict[str, torch.Tensor], A: torch.Tensor) -> tuple[float, list[int]]:
    """The paper's notebook metric: P_k = input->output map of subnetwork k, i* = argmax_i sum_j |P_k[i, j]|,
    pool (P_k[i*, :], A[i*, :]) over subnetworks, Pearson r (the paper's "r^2" is r; docs/reference/l3d.md 2.2)."""
    xs, ys, rows = [], [], []
    for k in range(v["W_in"].shape[0]):
        P = (v["W_out"][k] @ v["W_in"][k]).T  # [input i, output j] in the zoo's (out, in) weight layout
        i = int(P.abs().sum(1).argmax())
        rows.append(i)
        xs.append(P[i])
        ys.append(A[i])
    return float(torch.corrcoef(torch.stack([torch.cat(xs), torch.cat(ys)]))[0, 1]), rows


def gradient_pca_floor(model: nn.Module, names: tuple[str, ...], X: torch.Tensor, n_v: int) -> float:
    """Share of per-sample gradient energy outside the top n_v principal directions (three epochs of L3D's
    random in-batch references). No L3D decoder of n_v directions can leave less than this."""
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}
    src = GradientSource(model, params, X, jacobian_limit=1e9)
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(3):
        perm = torch.randperm(X.shape[0], generator=g)
        for s in range(0, X.shape[0], 32):
            idx = perm[s : s + 32]
            rows.append(src.batch(idx, torch.randint(0, idx.numel(), (idx.numel(),), generator=g)))
    S = torch.linalg.svdvals(torch.cat(rows)).pow(2)
    return float(S[n_v:].sum() / S.sum())


@pytest.mark.slow
def test_paper_tmcs_10_5_10_error_and_coefficient_correlation(toy):
    """Paper s3.2 / Fig 6: 10 rank-1 subnetworks, reconstruction error 6.4%, correlation 0.92 with A.

    Not reached on our toy (docs/methods/l3d.md): there the top 10 principal directions of the per-sample
    gradients already leave ~19% of their energy, a floor for any 10 subnetworks, and L3D lands at ~0.25 with
    r ~ 0.80. The tolerances below are ours: r within 0.17 of the paper's 0.92, at least 9 of the 10 features
    found, and the loss within 0.1 above the gradient-PCA floor (the paper's 6.4% is below our floor).
    """
    tmcs = toy("tmcs_10-5-10")
    model = tmcs.target().model
    X = tmcs.sample(1000, torch.Generator().manual_seed(1))
    names = ("W_in", "W_out", "b")
    floor = gradient_pca_floor(model, names, X, 10)
    cfg = L3DConfig(n_v=10, rank=1, warm_start_epochs=1)
    fit = train_l3d(model, names, X, cfg, seed=0)
    r, rows = tmcs_correlation({k: t.detach() for k, t in fit.decoder.dense().items()}, model.A)
    print(
        f"\n[l3d tmcs_10-5-10 paper] recon error {fit.final_loss:.4f} (paper 0.064; PCA-10 floor {floor:.4f}); "
        f"r {r:.3f} (paper 0.92); features {rows}; P_act {[round(p, 3) for p in fit.p_act]}"
    )
    assert r >= 0.75
    assert len(set(rows)) >= 9  # each subnetwork corresponds to a single input feature (one may be doubled)
    assert floor - 0.01 <= fit.final_loss <= floor + 0.1


@pytest.mark.slow
def test_tmcs_with_mean_output_reference_reaches_the_papers_correlation(toy):
    """The paper's reference option 2 (mean output) removes the random-pair cross terms: on our TMCS it gives
    r = 0.916 (paper 0.92) and all 10 features after 300 epochs (docs/methods/l3d.md). Tolerance: r >= 0.88,
    10 distinct features, loss <= 0.2 (ours 0.152; the paper's 0.064 is for its random reference)."""
    tmcs = toy("tmcs_10-5-10")
    model = tmcs.target().model
    X = tmcs.sample(1000, torch.Generator().manual_seed(1))
    cfg = L3DConfig(n_v=10, rank=1, warm_start_epochs=1, epochs=300, reference="mean")
    fit = train_l3d(model, ("W_in", "W_out", "b"), X, cfg, seed=0)
    r, rows = tmcs_correlation({k: t.detach() for k, t in fit.decoder.dense().items()}, model.A)
    print(f"\n[l3d tmcs_10-5-10 mean reference] recon error {fit.final_loss:.4f}; r {r:.3f}; features {rows}")
    assert r >= 0.88
    assert sorted(rows) == list(range(10))
    assert fit.final_loss <= 0.2


@pytest.mark.slow
def test_paper_higher_rank_one_live_subnetwork_per_group(toy):
    """Paper s3.3 / Fig 7 (code version: 30-10-30, six groups of five, n_v 8, rank 2): each group gets one
    live subnetwork and the rest are (near) dead. Fig 7's live ones have P_act 0.12-0.16, its dead ones 0; we
    call a subnetwork live at P_act >= 0.05 (a partial duplicate that fires on 3% of inputs counts as near-dead).
    Loss: the paper gives no number for this run (Fig S5's ~0.15 is for n_v 10); we only require <= 0.3."""
    hr = toy("higher_rank_30-10-30")
    model = hr.target().model
    X = hr.sample(1000, torch.Generator().manual_seed(1))
    fit = train_l3d(model, ("W_in", "W_out", "b"), X, L3DConfig(n_v=8, rank=2), seed=0)
    v = fit.decoder.dense()["W_in"].detach()  # [n_v, hidden, 30]
    mass = v.pow(2).sum(1).view(8, 6, 5).sum(2)
    mass = mass / mass.sum(1, keepdim=True)  # share of each subnetwork's W_in mass in each group
    live = [k for k in range(8) if fit.p_act[k] >= 0.05]
    groups = [int(mass[k].argmax()) for k in live]
    print(
        f"\n[l3d higher_rank_30-10-30 paper] recon error {fit.final_loss:.4f} (paper ~0.15); "
        f"P_act {[round(p, 3) for p in fit.p_act]}; live -> group {groups}; "
        f"purity {[round(float(mass[k].max()), 3) for k in live]}"
    )
    assert sorted(groups) == list(range(6))  # one live subnetwork per group, every group covered
    assert all(float(mass[k].max()) > 0.8 for k in live)
    assert fit.final_loss <= 0.3


@pytest.mark.slow
def test_paper_x_squared_one_subnetwork_per_input(toy):
    """Paper s3.4 (code version, zoo ``square_mlp``: ELU, 5-10-10-10-10-5): n_v 5, rank 2 on weights and 1 on
    biases, warm start 10, every tensor decomposed; reconstruction error 0.32 and each subnetwork traces one
    x_i -> x_i^2 path. Tolerance: error within +-0.08 of 0.32; the 5 subnetworks read 5 different inputs."""
    sq = toy("square_mlp")
    model = sq.target().model
    names = tuple(n for n, _ in model.named_parameters())
    rank = {n: ((2, 2) if p.dim() == 2 else (1,)) for n, p in model.named_parameters()}
    X = sq.sample(1000, torch.Generator().manual_seed(1))
    fit = train_l3d(model, names, X, L3DConfig(n_v=5, rank=rank, warm_start_epochs=10), seed=0)
    first = fit.decoder.dense()[names[0]].detach()  # [n_v, hidden, 5]: the first layer's weight part
    inputs = first.pow(2).sum(1).argmax(1).tolist()
    print(
        f"\n[l3d square_mlp paper] recon error {fit.final_loss:.4f} (paper 0.32); inputs {inputs}; "
        f"P_act {[round(p, 3) for p in fit.p_act]}"
    )
    assert sorted(inputs) == [0, 1, 2, 3, 4]
    assert 0.24 <= fit.final_loss <= 0.40
