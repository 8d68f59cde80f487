"""APD speed: vectorised attributions, one training step, and a whole TMS 5-2 decomposition.

Run with ``pytest tests/benchmarks/test_bench_apd.py --benchmark-enable`` (add ``-m slow`` for the whole
run). Reference on the same kind of 2-core CPU (``docs/reference/apd_spd.md`` section 5): ApolloResearch/apd
runs 12 TMS 5-2 decompositions together at 18.9 steps/s, 20k steps in 1,056 s, 8 of 12 reaching MMCS >= 0.99.
Target (issue 7): one TMS 5-2 decomposition to MMCS >= 0.99 in 30 s or less; the whole-run case checks the
quality it reaches and pytest-benchmark reports the time.
"""

from __future__ import annotations

import pytest
import torch

from benchmark.method import Budget
from benchmark.toy import load_toy
from methods import _apd_core as core
from methods.apd import APD

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tms():
    toy = load_toy("tms_5-2")
    t = toy.target()
    theta = {"W": t.model.W.detach().clone()}
    L, R = core.init_factors({"W": theta["W"].shape}, 5, 3, "xavier_normal", 1.0, torch.Generator().manual_seed(0))
    x = t.sample(2048, torch.Generator().manual_seed(1))
    return toy, t, theta, L, R, x


def _attributions_one_backward_per_output(f, theta, P, x):
    """The reference's way: per-input weight gradients by one backward pass per output, dotted with P."""
    W_b = theta["W"].expand(x.shape[0], -1, -1).clone().requires_grad_(True)
    out = core.per_input_forward(f, {"W": W_b}, x)
    attr = torch.zeros(x.shape[0], P["W"].shape[0])
    for o in range(out.shape[1]):
        (grad,) = torch.autograd.grad(out[:, o].sum(), W_b, retain_graph=True)
        attr += torch.einsum("bij,cij->bc", grad, P["W"]) ** 2
    return attr


@pytest.mark.benchmark(group="apd-attributions")
def test_attributions_vectorised_jvp(benchmark, tms):
    _, t, theta, L, R, x = tms
    f = core.make_forward(t.model, ("W",))
    P = core.component_weights(L, R)
    got = benchmark(core.gradient_attributions, f, theta, P, x)
    assert got.shape == (2048, 5)


@pytest.mark.benchmark(group="apd-attributions")
def test_attributions_vectorised_jvp_without_zero_tangents(benchmark, tms):
    """The same JVPs with the bias given no tangent (the code before ``Forward.vectors``): torch's forward-mode
    AD then adds a zero tensor through a Python decomposition."""
    _, t, theta, L, R, x = tms
    f = core.make_forward(t.model, ("W",))
    bare = core.Forward(f.module, f.fixed, f.prefix, vectors={})
    P = core.component_weights(L, R)
    got = benchmark(core.gradient_attributions, bare, theta, P, x)
    assert torch.equal(got, core.gradient_attributions(f, theta, P, x))


@pytest.mark.benchmark(group="apd-attributions")
def test_attributions_one_backward_per_output(benchmark, tms):
    _, t, theta, L, R, x = tms
    f = core.make_forward(t.model, ("W",))
    P = core.component_weights(L, R)
    got = benchmark(_attributions_one_backward_per_output, f, theta, P, x)
    torch.testing.assert_close(got, core.gradient_attributions(f, theta, P, x), rtol=1e-4, atol=1e-6)


@pytest.mark.benchmark(group="apd-step")
def test_one_training_step_tms_5_2(benchmark, tms):
    """One APD step at the paper's TMS 5-2 settings (batch 2048, C = 5): attributions, top-k, 3 losses, Adam."""
    _, t, theta, L0, R0, x = tms
    hp = APD().hparams("tms_5-2")
    f = core.make_forward(t.model, ("W",))
    L = {n: v.clone().requires_grad_(True) for n, v in L0.items()}
    R = {n: v.clone().requires_grad_(True) for n, v in R0.items()}
    opt = core.Adam([*L.values(), *R.values()])

    def step():
        losses = APD._losses(f, theta, L, R, x, hp, 10, [], t)
        loss = sum(hp[f"{k}_coeff"] * v for k, v in losses.items())
        opt.zero_grad()
        loss.backward()
        opt.step(hp["lr"])
        return loss

    assert torch.isfinite(benchmark(step))


@pytest.mark.slow
@pytest.mark.benchmark(group="apd-step")
def test_one_training_step_resid_mlp1(benchmark):
    """One APD step at the resid_mlp1 defaults (C = 130 full-rank components, batch 256, act recon, unit norm).

    Measured 0.83 s on one thread of a loaded 2-core CPU (2.0 s before the attributions went through the
    model's ``forward_fast`` and the per-input weights through a sparse product)."""
    t = load_toy("resid_mlp1").target()
    hp = APD().hparams("resid_mlp1")
    dec = benchmark.pedantic(
        lambda: APD(num_threads=1, log_every=0).decompose(t, Budget(steps=3), seed=0),
        rounds=3,
        iterations=1,
        warmup_rounds=1,
    )
    assert dec.record.steps == 3 and len(dec) == hp["C"]


@pytest.mark.slow
@pytest.mark.benchmark(group="apd-whole-run")
def test_whole_tms_5_2_decomposition(benchmark, tms):
    """One decomposition at the adapter's defaults (5,000 steps, seed 0) to MMCS >= 0.99 (paper metric)."""
    toy = tms[0]
    dec = benchmark.pedantic(lambda: APD().decompose(toy.target(), Budget(), seed=0), rounds=1, iterations=1)
    W = toy.model.W.detach().double()
    P = torch.stack([dec.dense(c)["W"] for c in range(len(dec))]).double()
    cos = (P * W).sum(1) / (P.norm(dim=1) * W.norm(dim=0)).clamp_min(1e-12)
    assert float(cos.max(0).values.mean()) >= 0.99


@pytest.mark.benchmark(group="apd-seeds-tms5-2")
@pytest.mark.parametrize("how", ["1 seed", "3 seeds one after another", "3 seeds together"])
def test_seeds_together(benchmark, heavy, how):
    """500 steps of APD's TMS 5-2 preset (batch 2,048, C 5) for one seed, three in turn and three as one batched
    model (:mod:`methods._apd_group`, the same bits as alone), one thread (APD's own setting)."""
    target = load_toy("tms_5-2").target()
    apd = APD(steps=500)
    seeds = [0] if how == "1 seed" else [0, 1, 2]

    def run() -> None:
        if how == "3 seeds together":
            apd.decompose_seeds(target, Budget(), seeds)
        else:
            for s in seeds:
                apd.decompose(target, Budget(), s)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
