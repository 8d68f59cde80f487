"""One decomposition of TMS 5-2 at paper quality, per method, one thread, side by side (speed issue).

Each case runs the method's own default for ``tms_5-2`` (the preset the reproduction track uses) on one seed,
timed once, and then checks that the run it timed is at its paper's quality, so that a faster preset cannot
buy time with a worse decomposition:

- APD (arXiv:2501.14926): MMCS >= 0.99 and ML2R within 0.03 of the paper's 0.893. The reference code
  (``ApolloResearch/apd``) trains 12 instances at once, 88 s per instance amortised on this CPU.
- SPD (arXiv:2506.20790): MMCS >= 0.999, ML2R in [0.98, 1.04], exactly 5 subcomponents kept. The reference code
  (``goodfire-ai/spd``) takes 403 s for its 10,000 steps on this CPU.
- L3D (arXiv:2504.00194): five subnetworks, each lined up with one feature's column of W (one-to-one score >=
  0.99) and the most important one on each single-feature input a different one.

APD and SPD do not reach paper quality on every seed, nor do the papers' own runs: each case names a seed on
which the method's default does (the success rate over seeds is in docs/methods/*.md). A report, not a timed
assert. Run: ``pytest tests/benchmarks/test_bench_paper_quality.py --benchmark-enable``.
"""

from __future__ import annotations

import pytest
import torch
from paper_metrics import paper_mmcs_ml2r

from benchmark.decomposition import Decomposition
from benchmark.method import Budget
from benchmark.registry import METHODS
from benchmark.scoring import score
from benchmark.toy import ToyModel


def _w_pieces(dec: Decomposition) -> torch.Tensor:
    return torch.stack([dec.dense(i)["W"] for i in range(len(dec)) if "W" in dec.components[i]])


def apd_ok(tm: ToyModel, dec: Decomposition) -> bool:
    mmcs, ml2r = paper_mmcs_ml2r(tm.model.W.detach(), _w_pieces(dec))
    return mmcs >= 0.99 and abs(ml2r - 0.893) <= 0.03


def spd_ok(tm: ToyModel, dec: Decomposition) -> bool:
    P = _w_pieces(dec)
    mmcs, ml2r = paper_mmcs_ml2r(tm.model.W.detach(), P)
    return mmcs >= 0.999 and 0.98 <= ml2r <= 1.04 and len(P) == 5


def l3d_ok(tm: ToyModel, dec: Decomposition) -> bool:
    top = dec.attributions(0.8 * torch.eye(5)).argmax(1)
    return len(dec) == 5 and len(set(top.tolist())) == 5 and score(tm, dec, ["hungarian"])["hungarian"] >= 0.99


CASES = [("apd", 0, apd_ok), ("spd", 0, spd_ok), ("l3d", 0, l3d_ok)]


@pytest.mark.benchmark(group="paper-quality-tms_5-2")
@pytest.mark.parametrize(("method", "seed", "ok"), CASES, ids=[c[0] for c in CASES])
def test_one_decomposition_at_paper_quality(benchmark, heavy, one_thread, toy, method: str, seed: int, ok) -> None:  # noqa: ANN001
    tm = toy("tms_5-2")
    cls = METHODS.get(method)
    dec = benchmark.pedantic(lambda: cls().decompose(tm.target(), Budget(), seed), rounds=1, iterations=1)
    benchmark.extra_info["steps"] = dec.record.steps
    assert ok(tm, dec), f"{method} seed {seed} at its tms_5-2 default is not at paper quality"
