"""The data-only ICA reference row: FastICA recovers independent sources, and the row is faithful."""

from __future__ import annotations

import torch

from benchmark.method import Budget
from benchmark.registry import METHODS
from methods.ica import ica_basis


def test_fast_ica_recovers_a_random_mixing() -> None:
    g = torch.Generator().manual_seed(0)
    sources = torch.distributions.Laplace(0.0, 1.0).sample((20_000, 4)).double()
    mix = torch.randn(4, 4, generator=g, dtype=torch.float64)
    basis = ica_basis(sources @ mix.T, seed=0)
    assert basis.rank == 4
    assert torch.allclose(basis.read.T @ basis.write, torch.eye(4, dtype=torch.float64), atol=1e-8)
    # each mixing column is found as one write direction, up to order, sign and scale
    cos = (torch.nn.functional.normalize(mix, dim=0).T @ torch.nn.functional.normalize(basis.write, dim=0)).abs()
    assert float(cos.max(dim=1).values.min()) > 0.99
    assert ica_basis(sources @ mix.T, seed=0).read.equal(basis.read)  # deterministic for a seed


def test_ica_row_is_faithful_and_finds_tms_features(toy) -> None:  # noqa: ANN001
    t = toy("tms_5-2")
    dec = METHODS.get("ica")().decompose(t.target(), Budget(), seed=0)
    total = sum(dec.dense(i)["W"] for i in range(len(dec)) if "W" in dec.components[i])
    assert dec.faithful and torch.allclose(total, t.model.W.detach(), atol=1e-5)
    # the input features are the data's independent components: one piece per TMS column
    W = t.model.W.detach()
    pieces = [dec.dense(i)["W"] for i in range(len(dec))]
    for c in range(W.shape[1]):
        col = torch.zeros_like(W)
        col[:, c] = W[:, c]
        best = max(float((p * col).sum() / (p.norm() * col.norm() + 1e-12)) for p in pieces)
        assert abs(best) > 0.99, c


def test_ica_row_solves_shared_neurons(toy) -> None:  # noqa: ANN001
    """shared_neurons' ReLU is the identity on its data, so its mechanisms are the data's independent
    components: a data-only method recovers them (docs/toy_models.md, headroom gate)."""
    from benchmark.scoring import score

    t = toy("shared_neurons")
    dec = METHODS.get("ica")().decompose(t.target(), Budget(), seed=0)
    assert score(t, dec, ["hungarian"])["hungarian"] > 0.99
