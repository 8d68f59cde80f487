"""MMCS and the Hungarian-matched score on a case small enough to compute by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchmark.decomposition import Decomposition
from benchmark.scoring import ComponentSpace, score
from benchmark.toy import LinearSite, Mechanism, ToyModel, ToyModelSpec


class ThreeWeights(ToyModel):
    """W = [2, 3, 4] (1x3); mechanism i is W_i e_i, so its unit basis vector is e_i."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = ToyModelSpec("hand", 0, "1", 0, "exact", "", "", ("W",))

    def make_model(self) -> nn.Module:
        m = nn.Module()
        m.W = nn.Parameter(torch.tensor([[2.0, 3.0, 4.0]]))
        return m

    def fit(self, model, seed):
        return {}

    def sample(self, n, generator):
        return torch.rand(n, 3, generator=generator)

    def mechanisms(self, model):
        return [Mechanism(f"m{i}", {}, components={"W": model.W.detach() * torch.eye(3)[i]}) for i in range(3)]

    def active(self, inputs):
        return inputs != 0

    def sites(self, model, inputs):
        return [LinearSite("W", inputs)]


@pytest.fixture
def hand(tmp_path) -> ThreeWeights:
    from benchmark.cache import WeightCache

    return ThreeWeights().build(WeightCache(tmp_path))


def test_mmcs_and_hungarian_by_hand(hand) -> None:
    # c1 = (1, 1, 0): |cos| with m0, m1, m2 = 1/sqrt2, 1/sqrt2, 0.  c2 = (0, 0, -5): 0, 0, 1 (sign and scale ignored).
    dec = Decomposition([{"W": torch.tensor([[1.0, 1.0, 0.0]])}, {"W": torch.tensor([[0.0, 0.0, -5.0]])}])
    s = score(hand, dec, ["mmcs", "hungarian"])
    r = 1 / math.sqrt(2)
    # MMCS: each mechanism takes its best component: (r + r + 1) / 3.
    assert s["mmcs"] == pytest.approx((2 * r + 1) / 3, abs=1e-12)
    # One-to-one: c1 can serve only one of m0, m1; the other is unmatched and scores 0: (r + 0 + 1) / 3.
    assert s["hungarian"] == pytest.approx((r + 1) / 3, abs=1e-12)


def test_zero_components_score_zero_and_do_not_crash(hand) -> None:
    dec = Decomposition([{"W": torch.zeros(1, 3)}])
    ctx = ComponentSpace(hand, dec).own
    assert torch.equal(ctx.cosines, torch.zeros(3, 1, dtype=torch.float64))
