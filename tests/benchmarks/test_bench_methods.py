"""Wall time of every registered method on every tier-0/1 toy model, and of the per-sample gradient kernels.

``pytest tests/benchmarks/test_bench_methods.py --benchmark-enable``. Each method runs under the ``quick``
suite's budget (the same budget the runner gives it), on one thread, once per round; the toy model is
built (or loaded from the cache) before timing. The per-sample gradient cases time the kernel every
gradient-based method leans on (one ``vmap(grad)`` over a batch) against a Python loop over samples.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, vmap

from benchmark.registry import METHODS
from benchmark.suites import SUITES, toy_tiers

TOYS = sorted(t for t, tier in toy_tiers("reproduction").items() if tier <= 1)
BATCH = 256


@pytest.mark.parametrize("method", METHODS.names())
@pytest.mark.parametrize("toy_name", TOYS)
def test_method_on_toy(benchmark, heavy, one_thread, toy, toy_name: str, method: str) -> None:
    benchmark.group = f"method-{toy_name}"
    built = toy(toy_name)
    cls = METHODS.get(method)
    budget = SUITES["quick"].budget_for(method)

    def run():
        return cls().decompose(built.target(with_ground_truth=cls.sees_ground_truth), budget, 0, "cpu")

    dec = benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
    dec.validate(built.param_shapes())


def _loss_fn(toy):
    model = toy.model
    names = toy.spec.decomposed
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in names}

    def loss(params, x):
        out = functional_call(model, {**fixed, **params}, (x.unsqueeze(0),))
        return toy.loss(out, x.unsqueeze(0))

    params = {n: p.detach() for n, p in model.named_parameters() if n in names}
    return loss, params


def per_sample_vmap(loss, params, x):
    return vmap(grad(loss), in_dims=(None, 0))(params, x)


def per_sample_loop(loss, params, x):
    rows = [grad(loss)(params, x[i]) for i in range(x.shape[0])]
    return {n: torch.stack([r[n] for r in rows]) for n in params}


@pytest.mark.parametrize("kernel", [per_sample_vmap, per_sample_loop], ids=["vmap", "loop"])
@pytest.mark.parametrize("toy_name", TOYS)
def test_per_sample_gradients(benchmark, one_thread, toy, toy_name: str, kernel) -> None:
    benchmark.group = f"per-sample-grads-{toy_name}"
    built = toy(toy_name)
    loss, params = _loss_fn(built)
    x = built.sample(BATCH, torch.Generator().manual_seed(0))
    got = benchmark(kernel, loss, params, x)
    want = per_sample_loop(loss, params, x[:8])
    for n in params:  # the timed kernel must also be right
        assert got[n].shape == (BATCH, *params[n].shape)
        torch.testing.assert_close(got[n][:8], want[n], rtol=1e-4, atol=1e-6)
