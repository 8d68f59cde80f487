"""The headroom gate: a toy is on the headline track if and only if it passes (toy-ladder issue)."""

from __future__ import annotations

import pytest

from benchmark.headroom import GATE_ROWS, headroom
from benchmark.registry import TOY_MODELS
from benchmark.suites import SUITES

CHEAP = ["block_mlp-rot", "shared_neurons-rot", "tms_5-2-rot", "tms_5-2-id-rot", "tmcs_10-5-10-rot"]


def _track(name: str) -> str:
    return getattr(TOY_MODELS.get(name)(), "track", "reproduction")


HEADLINE = sorted(n for n in TOY_MODELS.names() if _track(n) == "headline")
INSTANCES = [f"{n}@{i}" for n in HEADLINE for i in range(SUITES["headline"].instances)]


@pytest.mark.parametrize("name", CHEAP + INSTANCES)
def test_track_agrees_with_the_gate(toy, name) -> None:  # noqa: ANN001
    t = toy(name)
    verdict = headroom(t)
    assert verdict.scores["oracle"] == pytest.approx(1.0)
    assert verdict.passed == (t.track == "headline"), (name, verdict.scores, verdict.failures)


def test_the_gate_fails_a_toy_that_a_fixed_basis_solves(toy) -> None:  # noqa: ANN001
    verdict = headroom(toy("tms_40-10"))  # TMS features are one-hot inputs: the neuron basis reads them
    assert not verdict.passed and any(f.startswith("neuron") for f in verdict.failures)
    assert set(verdict.scores) == {"oracle", "random", *GATE_ROWS}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", sorted(n for n in TOY_MODELS.names() if _track(n) == "diagnostic" and n.endswith("-rot"))
)
def test_every_diagnostic_variant_fails_the_gate(toy, name) -> None:  # noqa: ANN001
    assert not headroom(toy(name)).passed


@pytest.mark.parametrize("name", INSTANCES)
def test_the_hidden_neuron_split_stays_far_from_the_oracle(toy, name) -> None:  # noqa: ANN001
    """The hidden ReLU basis is privileged, so one cross-layer piece per hidden neuron (its W1 row and W2
    column) is a data-free decomposition of every headline toy. It must score as the split it is: a toy that
    declared those pieces as a refinement would give it 1."""
    import torch

    from benchmark.decomposition import Decomposition
    from benchmark.scoring import score

    t = toy(name)
    W1, W2 = t.model.W1.detach(), t.model.W2.detach()
    pieces = []
    for j in range(W1.shape[0]):
        row, col = torch.zeros_like(W1), torch.zeros_like(W2)
        row[j], col[:, j] = W1[j], W2[:, j]
        pieces.append({"W1": row, "W2": col})
    dec = Decomposition(pieces, attributions=lambda x: torch.relu(x.to(W1) @ W1.T), faithful=True)
    assert score(t, dec, ["hungarian"])["hungarian"] < 0.2
