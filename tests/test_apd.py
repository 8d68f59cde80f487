"""APD adapter (methods/apd.py, methods/_apd_core.py): unit tests on hand-computed cases, contract and
determinism checks, and (marked slow) reproductions of the APD paper's toy results (arXiv:2501.14926)."""

from __future__ import annotations

import math

import pytest
import torch
from paper_metrics import paper_mmcs_ml2r

from benchmark.decomposition import Decomposition
from benchmark.method import Budget
from benchmark.registry import METHODS
from benchmark.scoring import score
from methods import _apd_core as core
from methods.apd import APD

pytestmark = pytest.mark.usefixtures("one_thread")


def stacked(dec: Decomposition, name: str) -> torch.Tensor:
    return torch.stack([dec.dense(c)[name] for c in range(len(dec))])


# ---------------------------------------------------------------------------------------------------
# the pieces, on hand-computed cases


def test_topk_mask_batch_and_per_input() -> None:
    attr = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.2, 0.3]])
    m = core.topk_mask(attr, topk=1.0, batch_topk=True)  # int(1.0 * 2) = 2 largest over the whole batch
    assert m.tolist() == [[False, True, False], [True, False, False]]
    m = core.topk_mask(attr, topk=1.5, batch_topk=True)  # int(3.0) = 3
    assert m.sum() == 3 and m[1, 2]
    m = core.topk_mask(attr, topk=2, batch_topk=False)
    assert m.tolist() == [[True, True, False], [True, False, True]]


def test_schatten_loss_matches_per_input_sum() -> None:
    g = torch.Generator().manual_seed(0)
    L = {"W": torch.randn(3, 4, 2, generator=g)}
    R = {"W": torch.randn(3, 2, 5, generator=g)}
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]], dtype=torch.bool)
    p = 0.9
    want = 0.0
    for b in range(2):
        for c in range(3):
            for k in range(2):
                s = float(L["W"][c, :, k].norm() ** 2 * R["W"][c, k, :].norm() ** 2)
                want += float(mask[b, c]) * (s + 1e-16) ** (p / 2)
    want /= 20 * 2  # n_params, batch
    got = core.schatten_loss(L, R, mask, p, n_params=20)
    assert math.isclose(float(got), want, rel_tol=1e-5)


def test_masked_weights_sum_the_active_components() -> None:
    P = {"W": torch.arange(12.0).reshape(3, 2, 2)}
    mask = torch.tensor([[True, False, True], [False, False, False], [False, True, False]])
    got = core.masked_weights(P, mask)["W"]
    torch.testing.assert_close(got[0], P["W"][0] + P["W"][2])
    torch.testing.assert_close(got[1], torch.zeros(2, 2))
    torch.testing.assert_close(got[2], P["W"][1])


def test_masked_weights_gradient_reaches_each_active_component() -> None:
    """The sparse product's backward: d/dP_c of sum_b <G_b, W_b> is the sum of G_b over inputs where c is active."""
    g = torch.Generator().manual_seed(0)
    P = {"W": torch.randn(4, 3, 5, generator=g).requires_grad_(True)}
    mask = torch.rand(6, 4, generator=g) < 0.4
    G = torch.randn(6, 3, 5, generator=g)
    W_b = core.masked_weights(P, mask)["W"]
    torch.testing.assert_close(W_b, torch.einsum("bc,cij->bij", mask.float(), P["W"].detach()))
    (W_b * G).sum().backward()
    torch.testing.assert_close(P["W"].grad, torch.einsum("bc,bij->cij", mask.float(), G))


def test_faithfulness_loss_hand_case() -> None:
    theta = {"W": torch.ones(2, 2)}
    P = {"W": torch.stack([torch.eye(2), torch.zeros(2, 2)])}  # sums to I, residual has two ones
    assert float(core.faithfulness_loss(theta, P, n_params=4)) == pytest.approx(2 / 4)


def test_lr_schedule_matches_reference_formula() -> None:
    # warm-up 10 of 100 steps: linear from 0; then a quarter cosine over the 90 remaining
    assert core.lr_at(0, 100, 1.0, "cosine", 0.1) == 0.0
    assert core.lr_at(5, 100, 1.0, "cosine", 0.1) == pytest.approx(0.5)
    assert core.lr_at(10, 100, 1.0, "cosine", 0.1) == pytest.approx(1.0)
    assert core.lr_at(99, 100, 1.0, "cosine", 0.1) == pytest.approx(0.0, abs=1e-12)
    assert core.lr_at(55, 100, 2.0, "linear", 0.1) == pytest.approx(2.0 * (1 - 45 / 90))
    assert core.lr_at(55, 100, 2.0, "constant", 0.1) == 2.0
    with pytest.raises(ValueError, match="lr_schedule"):
        core.lr_at(55, 100, 2.0, "exponential", 0.1)


def test_vectorised_attributions_equal_one_backward_per_output(toy) -> None:
    """The JVP-over-components attributions equal the reference's loop: one backward per output, per-input
    gradients w.r.t. the weights, dotted with each component (spd/utils.py:calc_grad_attributions)."""
    t = toy("tms_5-2").target()
    f = core.make_forward(t.model, ("W",))
    theta = {"W": t.model.W.detach().clone()}
    g = torch.Generator().manual_seed(3)
    P = {"W": torch.randn(4, *theta["W"].shape, generator=g)}
    x = t.sample(64, g) + 0.05  # dense inputs so that every ReLU path is exercised
    fast = core.gradient_attributions(f, theta, P, x)

    W_b = theta["W"].expand(64, -1, -1).clone().requires_grad_(True)  # one weight copy per input
    out = core.per_input_forward(f, {"W": W_b}, x)
    slow = torch.zeros(64, 4)
    for o in range(out.shape[1]):
        (grad,) = torch.autograd.grad(out[:, o].sum(), W_b, retain_graph=True)  # [64, 2, 5]
        slow += torch.einsum("bij,cij->bc", grad, P["W"]) ** 2
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["tms_5-2", "square_mlp", "gated_circuits-rot@0"])
def test_zero_tangents_on_fixed_vectors_change_no_bit(toy, name: str) -> None:
    """The attributions give the model's fixed 1-D tensors (biases) a zero tangent, which spares torch's slow
    zero-tensor add; the numbers are those of the JVPs without it, bit for bit, and every fixed bias is one."""
    t = toy(name).target()
    f = core.make_forward(t.model, t.decomposed, fast=True)
    biases = {k for k, v in t.model.named_parameters() if k not in t.decomposed and v.dim() == 1}
    assert set(f.vectors) == biases
    theta = {n: p.detach().clone() for n, p in t.params().items()}
    g = torch.Generator().manual_seed(1)
    P = {n: torch.randn(4, *v.shape, generator=g) for n, v in theta.items()}
    x = t.sample(64, g) + 0.05
    bare = core.Forward(f.module, f.fixed, f.prefix, vectors={})
    assert torch.equal(core.gradient_attributions(f, theta, P, x), core.gradient_attributions(bare, theta, P, x))


@pytest.mark.parametrize(("name", "chunk"), [("tms_5-2", None), ("square_mlp", 2), ("gated_circuits-rot@0", None)])
def test_the_jvps_forward_pass_is_the_targets_output_bit_for_bit(toy, name: str, chunk: int | None) -> None:
    """A training step takes the target's output from the attributions' JVPs instead of running the network
    once more: it equals ``f(theta, x)`` bit for bit, and the attributions are unchanged."""
    t = toy(name).target()
    f = core.make_forward(t.model, t.decomposed, fast=True)
    theta = {n: p.detach().clone() for n, p in t.params().items()}
    g = torch.Generator().manual_seed(2)
    P = {n: torch.randn(5, *v.shape, generator=g) for n, v in theta.items()}
    x = t.sample(96, g)
    attr, out = core.attributions_and_output(f, theta, P, x, chunk)
    assert torch.equal(out, f(theta, x))
    assert torch.equal(attr, core.gradient_attributions(f, theta, P, x, chunk))


def test_fast_forward_gives_the_same_outputs_and_attributions(toy) -> None:
    """resid_mlp1 has a ``forward_fast`` (embedding products folded); the attributions computed through it
    (about 8x cheaper on resid_mlp1) equal those through the plain forward, and select the same top-k."""
    t = toy("resid_mlp1").target()
    names = t.decomposed
    plain, fast = core.make_forward(t.model, names), core.make_forward(t.model, names, fast=True)
    theta = {n: p.detach().clone() for n, p in t.params().items()}
    g = torch.Generator().manual_seed(0)
    P = {n: torch.randn(6, *v.shape, generator=g) * 0.1 for n, v in theta.items()}
    x = t.sample(32, g)
    torch.testing.assert_close(fast(theta, x), plain(theta, x), rtol=1e-4, atol=1e-5)
    a, b = core.gradient_attributions(plain, theta, P, x), core.gradient_attributions(fast, theta, P, x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6 * float(a.max()))
    assert torch.equal(core.topk_mask(a, 1.28), core.topk_mask(b, 1.28))
    tms = toy("tms_5-2").target()  # no forward_fast: the plain forward
    f = core.make_forward(tms.model, ("W",), fast=True)
    xt = tms.sample(8, g)
    torch.testing.assert_close(f({"W": tms.model.W.detach()}, xt), tms.model(xt))


def test_per_input_forward_uses_each_inputs_own_weights(toy) -> None:
    t = toy("tms_5-2").target()
    f = core.make_forward(t.model, ("W",))
    x = t.sample(3, torch.Generator().manual_seed(0)) + 0.1
    W_b = torch.randn(3, *t.model.W.shape, generator=torch.Generator().manual_seed(1))
    got = core.per_input_forward(f, {"W": W_b}, x)
    b = t.model.b.detach()
    for i in range(3):
        want = torch.relu(x[i] @ W_b[i].T @ W_b[i] + b)
        torch.testing.assert_close(got[i], want)


def test_adam_matches_torch_adam() -> None:
    g = torch.Generator().manual_seed(0)
    p1 = torch.randn(3, 4, generator=g).requires_grad_(True)
    p2 = p1.detach().clone().requires_grad_(True)
    ours, ref = core.Adam([p1]), torch.optim.Adam([p2], lr=0.1)
    for _ in range(5):
        target = torch.randn(3, 4, generator=g)
        for p in (p1, p2):
            ((p - target) ** 3).abs().sum().backward()
        ours.step(0.1)
        ref.step()
        ours.zero_grad()
        ref.zero_grad()
        torch.testing.assert_close(p1, p2)


def test_init_rejects_non_matrices_and_bad_rank() -> None:
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="matrices"):
        core.init_factors({"b": torch.Size([5])}, 2, None, "xavier_normal", 1.0, g)
    with pytest.raises(ValueError, match="rank"):
        core.init_factors({"W": torch.Size([2, 5])}, 2, 0, "xavier_normal", 1.0, g)
    with pytest.raises(ValueError, match="init"):
        core.init_factors({"W": torch.Size([2, 5])}, 2, None, "orthogonal", 1.0, g)
    L, R = core.init_factors({"W": torch.Size([2, 5])}, 3, None, "kaiming_uniform", 2.0, g)
    assert L["W"].shape == (3, 2, 2) and R["W"].shape == (3, 2, 5)


@pytest.mark.parametrize("instances", [1, 3])
def test_instanced_init_matches_reference_fans(instances: int) -> None:
    """With ``instances``, each factor has the spread torch's xavier_normal gives the reference's
    ``[n_instances, C, a, b]`` tensor (APD repo, ``spd/module_utils.py:init_param_``), whatever our layout."""
    C, gain = 30, 2.0
    L, R = core.init_factors(
        {"W": torch.Size([40, 200])}, C, 20, "xavier_normal", gain, torch.Generator().manual_seed(0), instances
    )
    for ours, (a, b) in ((L["W"], (40, 20)), (R["W"], (20, 200))):
        ref = torch.nn.init.xavier_normal_(torch.empty(instances, C, a, b), gain=gain)
        assert float(ours.std()) == pytest.approx(float(ref.std()), rel=0.03)
    plain, _ = core.init_factors(
        {"W": torch.Size([40, 200])}, C, 20, "xavier_normal", gain, torch.Generator().manual_seed(0)
    )
    assert float(plain["W"].std()) > 3 * float(L["W"].std())  # the 3-d fans start far larger: the gap matters


# ---------------------------------------------------------------------------------------------------
# the adapter


def test_registered_with_cited_per_model_defaults() -> None:
    cls = METHODS.get("apd")
    assert cls is APD and "2501.14926" in cls.paper
    hp = cls().hparams("tms_5-2")
    assert (hp["C"], hp["topk"], hp["simplicity_coeff"], hp["lr"]) == (5, 0.211, 0.7, 3e-2)
    hp = cls().hparams("tms_40-10")  # the paper's own run (appendix), not the config file's C 40, topk 2, 15
    assert (hp["C"], hp["topk"], hp["minimality_coeff"], hp["simplicity_coeff"], hp["schatten_p"]) == (
        50,
        1.0,
        10.0,
        20.0,
        0.9,
    )
    hp = cls().hparams("tms_40-10-id")  # no paper settings: the config file's 40-10 recipe, C = 40 + 10
    assert (hp["C"], hp["topk"], hp["simplicity_coeff"], hp["init_scale"]) == (50, 2.0, 15.0, 1.0)
    hp = cls().hparams("resid_mlp1")  # resid_mlp_topk_config.yaml, with ResidualMLPSPDConfig's init
    assert (hp["C"], hp["lr"], hp["unit_norm"], hp["init"], hp["init_scale"], hp["init_instances"]) == (
        130,
        1e-3,
        True,
        "xavier_normal",
        2.0,
        1,
    )
    assert cls(C=7).hparams("tms_5-2")["C"] == 7
    with pytest.raises(ValueError, match="no hyperparameter"):
        cls(not_a_knob=1)


def test_short_run_is_a_valid_faithful_decomposition(toy) -> None:
    tm = toy("tms_5-2")
    dec = APD().decompose(tm.target(), Budget(steps=300), seed=0)
    dec.validate(tm.param_shapes())
    assert len(dec) == 5 and dec.faithful and dec.record.steps == 300
    total = stacked(dec, "W").sum(0)
    # 300 steps at lr 0.03: the components already sum to W within a few percent
    assert float((total - tm.model.W).norm() / tm.model.W.norm()) < 0.05
    attr = dec.attributions(tm.sample(128, torch.Generator().manual_seed(1)))
    assert attr.shape == (128, 5) and torch.isfinite(attr).all() and (attr >= 0).all()
    zero = dec.attributions(torch.zeros(4, 5))  # TMS: no feature on, ReLU paths off except through b
    assert torch.isfinite(zero).all()
    with pytest.raises(ValueError, match="finite"):
        dec.attributions(torch.full((2, 5), float("nan")))


def test_same_seed_same_result_other_seed_differs(toy) -> None:
    tm = toy("tms_5-2")
    a = APD().decompose(tm.target(), Budget(steps=20), seed=4)
    b = APD().decompose(tm.target(), Budget(steps=20), seed=4)
    c = APD().decompose(tm.target(), Budget(steps=20), seed=5)
    assert torch.equal(stacked(a, "W"), stacked(b, "W"))
    assert not torch.equal(stacked(a, "W"), stacked(c, "W"))


def test_budget_steps_and_scale_are_honoured(toy) -> None:
    tm = toy("tms_5-2")
    assert APD().decompose(tm.target(), Budget(steps=7), seed=0).record.steps == 7
    dec = APD(steps=40).decompose(tm.target(), Budget(scale=0.25), seed=0)
    assert dec.record.steps == 10 and dec.record.hparams["steps"] == 10


def test_thread_setting_is_restored(toy) -> None:
    torch.set_num_threads(2)
    try:
        APD(num_threads=1).decompose(toy("tms_5-2").target(), Budget(steps=2), seed=0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_bad_hyperparameters_get_clear_errors(toy) -> None:
    t = toy("tms_5-2").target()
    for bad, match in [
        ({"C": 0}, "C >= 1"),
        ({"topk": 0.0}, "topk"),
        ({"attribution_point": "x"}, "attribution"),
        ({"lr": float("nan")}, "lr"),
        ({"topk": 1e-5}, "selects no component"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"num_threads": 0}, "num_threads"),
        ({"init_instances": 0}, "init_instances"),
    ]:
        with pytest.raises(ValueError, match=match):
            APD(**bad).decompose(t, Budget(steps=2), seed=0)
    with pytest.raises(TypeError, match="'init_instances' must be a int | None"):  # refused by the typed Config
        APD(init_instances=0.5)


def test_diverging_run_raises_instead_of_returning_nan(toy) -> None:
    with pytest.raises(FloatingPointError, match="APD loss"):
        APD(lr=1e30, lr_warmup_pct=0.0).decompose(toy("tms_5-2").target(), Budget(steps=30), seed=0)


def test_runs_on_a_two_matrix_model_with_act_recon_and_unit_norm(toy) -> None:
    """block_mlp has two untied matrices: components span both, unit-norm keeps input-side rows at norm 1."""
    tm = toy("block_mlp")
    dec = APD(
        C=4, topk=1.0, batch_size=256, unit_norm=True, act_recon_coeff=1.0, act_recon_relu=True, lr=1e-2
    ).decompose(tm.target(), Budget(steps=30), seed=0)
    dec.validate(tm.param_shapes())
    assert set(dec.components[0]) == {"W1", "W2"}
    for c in dec.components:
        # the factor was normalised before the last step, which moved it only slightly
        norms = c["W1"].right.norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=0.1)
    scores = score(tm, dec)
    assert all(v is None or math.isfinite(v) for v in scores.values())


# ---------------------------------------------------------------------------------------------------
# paper reproductions (slow)


def _seed_sweep(tm, seeds, steps=None):
    rows = []
    for s in seeds:
        dec = APD().decompose(tm.target(), Budget(steps=steps), seed=s)
        rows.append((paper_mmcs_ml2r(tm.model.W.detach(), stacked(dec, "W")), score(tm, dec), dec))
    return rows


@pytest.mark.slow
def test_tms_5_2_reproduces_paper_over_ten_seeds(toy) -> None:
    """APD paper: MMCS 0.998, ML2R 0.893 on TMS 5-2. The reference code reaches MMCS >= 0.99 on 8/12 and
    10/12 instances (docs/reference/apd_spd.md 5); we require at least its lower rate (7 of 10 seeds >= 8/12), and the
    paper's numbers on the successful seeds."""
    tm = toy("tms_5-2")
    rows = _seed_sweep(tm, range(10))
    ok = [r for r in rows if r[0][0] >= 0.99]
    print("tms_5-2 success", len(ok), "/ 10;", [(round(a, 4), round(b, 3)) for (a, b), _, _ in rows])
    assert len(ok) >= 7
    mmcs = sum(r[0][0] for r in ok) / len(ok)
    ml2r = sum(r[0][1] for r in ok) / len(ok)
    assert mmcs == pytest.approx(0.998, abs=0.002)
    assert ml2r == pytest.approx(0.893, abs=0.03)
    for (m, l), sc, _ in ok:  # the benchmark's own copy of the paper metric agrees with this file's
        assert sc["mmcs_apd"] == pytest.approx(m, abs=1e-6)
        assert sc["ml2r_apd"] == pytest.approx(l, abs=1e-6)


@pytest.mark.slow
def test_tms_40_10_reproduces_paper(toy) -> None:
    """APD paper: MMCS 0.996, ML2R 0.935 on TMS 40-10 (defaults: the paper run's C 50, topk 1, coefficients 1/10/20).

    The paper's number is one instance (of 3) of one run (reference ``spd_interp.py``), so it gives no success
    rate. Measured at the defaults over seeds 0-16 (20k steps, 8-15 min per seed on one core): 3 of 17 reach
    MMCS >= 0.99 (seeds 4, 5, 13: 0.9957 / 0.935, 0.9944 / 0.916, 0.9948 / 0.914); the others end at
    0.969-0.984 (seeds 0-2 diagnosed: merged feature pairs and orphaned features; docs/methods/apd.md).
    This test runs seeds 0-9 (2 successes measured there), asks for at least one success, and for the
    paper's numbers on the successful seeds."""
    tm = toy("tms_40-10")
    rows = _seed_sweep(tm, range(10))
    ok = [r for r in rows if r[0][0] >= 0.99]
    print("tms_40-10 success", len(ok), "/ 10;", [(round(a, 4), round(b, 3)) for (a, b), _, _ in rows])
    assert len(ok) >= 1
    assert sum(r[0][0] for r in ok) / len(ok) == pytest.approx(0.996, abs=0.004)
    assert sum(r[0][1] for r in ok) / len(ok) == pytest.approx(0.935, abs=0.04)


@pytest.mark.slow
def test_tms_5_2_id_failure_shows_in_scores(toy) -> None:
    """APD does not recover the mechanisms of TMS 5-2 with a frozen identity (reported in the SPD paper,
    arXiv:2506.20790, TMS-with-identity experiment); our one-to-one matched score must show it as a failure."""
    tm = toy("tms_5-2-id")
    r = score(tm, APD().decompose(tm.target(), Budget(), seed=0))
    print("tms_5-2-id", {k: r[k] for k in ("hungarian", "mmcs", "mmcs_apd", "ml2r_apd", "merged_components")})
    assert r["hungarian"] < 0.9  # measured 0.749 at the defaults, seed 0
    assert r["mmcs_apd"] < 0.99  # the papers' own TMS criterion fails too (measured 0.955)


@pytest.mark.slow
def test_resid_mlp1_per_feature_w_in_components(toy) -> None:
    """APD paper, residual MLP (1 layer): components that each carry one feature's W_in piece, (W_in w_i) d_i^T.

    Paper-scale compute (C = 130 full-rank components over 100k parameters): about 50 minutes on one CPU
    core; set ``PDBENCH_TEST_DEVICE=cuda`` where one is present. Measured at the defaults: see
    docs/methods/apd.md, "resid_mlp1"."""
    import os

    tm = toy("resid_mlp1")
    dec = APD().decompose(tm.target(), Budget(), seed=0, device=os.environ.get("PDBENCH_TEST_DEVICE", "cpu"))
    name = "layers.0.W_in"
    comps = stacked(dec, name).reshape(len(dec), -1).double()
    mechs = [m for m in tm.ground_truth.mechanisms if not m.always_on]
    z = torch.stack([m.components[name].reshape(-1) for m in mechs]).double()
    cos = (z @ comps.T).abs() / (z.norm(dim=1, keepdim=True) * comps.norm(dim=1).clamp_min(1e-12))
    best = cos.max(dim=1)
    print(
        "resid_mlp1 W_in per-feature best |cos|: mean",
        float(best.values.mean()),
        "features >= 0.9:",
        int((best.values >= 0.9).sum()),
        "distinct components:",
        len(set(best.indices.tolist())),
    )
    assert float(best.values.mean()) >= 0.9
    assert len(set(best.indices[best.values >= 0.9].tolist())) >= 0.9 * int((best.values >= 0.9).sum())
