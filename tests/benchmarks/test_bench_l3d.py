"""L3D per-sample gradients: one vmap(grad) call against a Python loop over samples (arXiv:2504.00194 s2.2).

Run with ``pytest tests/benchmarks/test_bench_l3d.py --benchmark-enable``; the two cases share a group, so
pytest-benchmark prints them side by side. The model is L3D's circuit toy shape (10 -> 5 -> 10, ReLU output,
all three tensors decomposed) and a batch of 32, the paper's L3D batch size.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from methods._l3d_grads import per_sample_grads, per_sample_grads_loop

pytestmark = pytest.mark.usefixtures("one_thread")


class Circuit(nn.Module):
    def __init__(self, g: torch.Generator):
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(5, 10, generator=g))
        self.W_out = nn.Parameter(torch.randn(10, 5, generator=g))
        self.b = nn.Parameter(torch.zeros(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_in.T @ self.W_out.T + self.b)


@pytest.fixture(scope="module")
def case():
    g = torch.Generator().manual_seed(0)
    model = Circuit(g)
    params = {n: p.detach() for n, p in model.named_parameters()}
    x = torch.rand(32, 10, generator=g) * (torch.rand(32, 10, generator=g) < 0.3)
    with torch.no_grad():
        y_ref = model(x)[torch.randint(0, 32, (32,), generator=g)]
    return model, params, x, y_ref


@pytest.mark.benchmark(group="l3d-per-sample-grads")
def test_per_sample_grads_vmap(benchmark, case):
    model, params, x, y_ref = case
    out = benchmark(per_sample_grads, model, params, x, y_ref)
    ref = per_sample_grads_loop(model, params, x, y_ref)
    for n in params:  # the timed function must also be right
        torch.testing.assert_close(out[n], ref[n], rtol=1e-5, atol=1e-6)


@pytest.mark.benchmark(group="l3d-per-sample-grads")
def test_per_sample_grads_loop(benchmark, case):
    model, params, x, y_ref = case
    out = benchmark(per_sample_grads_loop, model, params, x, y_ref)
    assert out["W_in"].shape == (32, 5, 10)


@pytest.mark.benchmark(group="l3d-seeds")
@pytest.mark.parametrize("toy_name", ["tms_5-2", "gated_circuits-rot@0"])
@pytest.mark.parametrize("how", ["1 seed", "3 seeds one after another", "3 seeds together"])
def test_seeds_together(benchmark, heavy, how, toy_name):
    """20 epochs (640 steps) of L3D for one seed, three in turn and three as one batched model
    (:mod:`methods._l3d_group`, the same bits as alone), one thread: TMS 5-2 at the paper's settings and a
    headline toy under the blind rule (n_v 40, two matrices). Each step is a few dozen small operations, so
    three stacked cost well under three steps. The runs' set-up (data, Jacobians) is not timed."""
    from benchmark.method import Budget
    from benchmark.registry import METHODS
    from benchmark.toy import load_toy
    from methods._l3d_group import train_together
    from methods._l3d_train import train_run

    target = load_toy(toy_name).target()
    l3d = METHODS.get("l3d")(epochs=20, tuned=toy_name == "tms_5-2")
    seeds = [0] if how == "1 seed" else [0, 1, 2]

    def setup() -> tuple[tuple[list], dict]:  # data, Jacobians, banks: outside the timing
        return ([l3d._setup(target, Budget(), s, "cpu")[0] for s in seeds],), {}

    def run(runs: list) -> None:
        if how == "3 seeds together":
            train_together(runs)
        else:
            for r in runs:
                train_run(r)

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1, warmup_rounds=1)
