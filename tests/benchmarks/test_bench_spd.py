"""SPD speed: one training step with batched causal-importance MLPs, and whole runs to paper quality.

Run with ``pytest tests/benchmarks/test_bench_spd.py --benchmark-enable`` (add ``-m slow`` for the whole
runs). ``PDBENCH_BENCH_DEVICE=cuda`` runs the same cases on a GPU. Reference on the same kind of 2-core
CPU (``docs/reference/apd_spd.md`` section 5): goodfire-ai/spd (spd-paper) runs TMS 5-2 at 24.8 steps/s
(10k steps in about 400 s) and TMS 40-10 (C = 200) at 1.27 steps/s. Targets (issue 8): TMS 5-2 to
MMCS >= 0.999 and ML2R >= 0.99 in 60 s or less, TMS 40-10 in 10 minutes or less. The whole-run cases
check the quality they reach; the time is what pytest-benchmark reports.
"""

from __future__ import annotations

import os

import pytest
import torch

from benchmark.method import Budget
from benchmark.registry import METHODS
from benchmark.toy import load_toy
from methods._spd_core import SPDConfig, SPDTrainer
from methods.spd import SPD

DEVICE = os.environ.get("PDBENCH_BENCH_DEVICE", "cpu")


def _mmcs_ml2r(W: torch.Tensor, P: torch.Tensor) -> tuple[float, float]:
    """The papers' signed, column-wise MMCS and ML2R on TMS's W [m1, m2]; P [C, m1, m2]."""
    W, P = W.double(), P.double()
    cos = torch.einsum("cij,ij->cj", P, W) / (P.norm(dim=1) * W.norm(dim=0) + 1e-12)
    best = cos.argmax(0)
    return float(cos.max(0).values.mean()), float(
        (P[best, :, torch.arange(W.shape[1])].norm(dim=1) / W.norm(dim=0)).mean()
    )


@pytest.fixture(scope="module", params=["tms_5-2", "tms_40-10"])
def trainer(request):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    toy = load_toy(request.param)
    t = toy.target()
    hp = SPD().hparams(request.param)
    cfg = SPDConfig(
        C=hp["C"],
        imp_coeff=hp["imp_coeff"],
        pnorm=hp["pnorm"],
        batch_size=hp["batch_size"],
        d_gate=hp["d_gate"],
        steps=10,
    )
    return SPDTrainer(t.model.to(DEVICE), t.params(), t.sample, cfg, seed=0, device=DEVICE)


@pytest.mark.benchmark(group="spd-step")
def test_spd_training_step(benchmark, trainer):
    """One optimisation step (forward, all four losses, backward, AdamW) at the fast preset's batch."""
    opt = torch.optim.AdamW(trainer.spd.parameters(), lr=1e-3)

    def step() -> float:
        terms = trainer.losses(trainer.sample(trainer.cfg.batch_size))
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        return float(terms["total"].detach())

    assert torch.isfinite(torch.tensor(benchmark(step)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tms_5-2", "tms_40-10"])
def test_spd_run_to_paper_quality(benchmark, name):
    """A whole fast-preset run; the paper's quality (MMCS 1.000, ML2R ~1) must come out of it."""
    toy = load_toy(name)
    dec = benchmark.pedantic(
        lambda: SPD().decompose(toy.target(), Budget(), seed=0, device=DEVICE), rounds=1, iterations=1
    )
    P = torch.stack([dec.dense(i)["W"] for i in range(len(dec))])
    mmcs, ml2r = _mmcs_ml2r(toy.model.W.detach(), P)
    benchmark.extra_info.update({"mmcs": mmcs, "ml2r": ml2r, "steps": dec.record.steps})
    assert mmcs >= 0.999 and 0.99 <= ml2r <= 1.04, (mmcs, ml2r)


def _ci_loop(spd, inner: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """One small MLP call per (site, subcomponent): what batching replaces."""
    cols = []
    for s in range(inner.shape[1]):
        for c in range(inner.shape[2]):
            h = torch.nn.functional.gelu(inner[:, s, c, None] * spd.w_in[s, c] + spd.b_in[s, c])
            cols.append(h @ spd.w_out[s, c] + spd.b_out[s, c])
    return torch.stack(cols, dim=1).reshape(inner.shape)


@pytest.fixture(scope="module")
def ci_case():
    toy = load_toy("tms_40-10")
    t = toy.target()
    tr = SPDTrainer(
        t.model.to(DEVICE), t.params(), t.sample, SPDConfig(C=200, steps=1, batch_size=1024), seed=0, device=DEVICE
    )
    _, inner = tr.target_pass(tr.sample(1024))
    return tr.spd, inner.detach().requires_grad_(True)


@pytest.mark.benchmark(group="spd-ci-tms40-10")
@pytest.mark.parametrize("impl", ["batched", "loop"])
def test_ci_forward_backward(benchmark, ci_case, impl):
    """TMS 40-10 sizes (2 sites x C = 200 MLPs, batch 1024): all CI MLPs at once vs one call per MLP."""
    spd, inner = ci_case
    fn = spd.ci_raw if impl == "batched" else (lambda x: _ci_loop(spd, x))

    def run() -> torch.Tensor:
        out = fn(inner)
        out.square().sum().backward()
        return out.detach()

    out = benchmark(run)
    torch.testing.assert_close(out, _ci_loop(spd, inner).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2], ids=["1 thread", "2 threads"])
@pytest.mark.parametrize("how", ["1 seed", "3 seeds one after another", "3 seeds together"])
@pytest.mark.parametrize("method", ["spd", "vpd"])
def test_seeds_together(benchmark, heavy, method, how, threads):
    """100 training steps of the TMS 5-2 fast preset (batch 1024) for one seed, three in turn and three as one
    batched model (:mod:`methods._spd_group`, :mod:`methods._vpd_group` for VPD and SPD main; the same bits as
    alone), on 1 and on 2 torch threads. At this batch the step is dominated by the CI MLPs' arithmetic, not by
    overhead, so three together cost about two or three one-seed steps, not one."""
    from methods import _spd_group, _vpd_group

    benchmark.group = f"{method}-seeds-tms5-2"
    train_together = (_spd_group if method == "spd" else _vpd_group).train_together
    target = load_toy("tms_5-2").target()
    adapter = METHODS.get(method)(steps=100)
    seeds = [0] if how == "1 seed" else [0, 1, 2]

    def run() -> None:
        trainers = [adapter.trainer(target, Budget(), s, DEVICE)[0] for s in seeds]
        if how == "3 seeds together":
            train_together(trainers)
        else:
            for t in trainers:
                t.train()

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    finally:
        torch.set_num_threads(before)
