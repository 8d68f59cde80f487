"""The adversarial faithfulness metric (benchmark/metrics/adversarial.py) and the stored importance scale."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures.linear_toy import LinearToy

from benchmark.decomposition import Decomposition, DecompositionError
from benchmark.metrics.adversarial import adversarial_error
from benchmark.scoring import ComponentSpace, eval_inputs, score
from benchmark.stored import StoredDecomposition, StoredDecompositionError


def _toy() -> LinearToy:
    return LinearToy(torch.randn(4, 6, generator=torch.Generator().manual_seed(0)), p_active=0.3)


def _oracle(toy: LinearToy, importance, **kw) -> Decomposition:  # noqa: ANN001
    comps = [m.components for m in toy.ground_truth.mechanisms]
    return Decomposition(comps, attributions=importance, faithful=True, importances=True, **kw)


def _stored_error(toy: LinearToy, dec: Decomposition) -> float | None:
    x = eval_inputs(toy)
    stored = StoredDecomposition.from_bytes(StoredDecomposition.capture(dec, x).to_bytes())
    return adversarial_error(ComponentSpace(toy, stored.decomposition(x)).raw)


def test_true_importances_leave_nothing_to_find_and_none_leave_everything() -> None:
    toy = _toy()
    active = lambda x: toy.ground_truth.active(x).double()  # noqa: E731
    assert _stored_error(toy, _oracle(toy, active)) == pytest.approx(0.0, abs=1e-12)
    assert _stored_error(toy, _oracle(toy, lambda x: torch.ones(x.shape[0], 6))) == pytest.approx(0.0, abs=1e-12)
    # importances of 0 everywhere: the adversary ablates every component (and the residual, which is 0)
    assert _stored_error(toy, _oracle(toy, lambda x: torch.zeros(x.shape[0], 6))) == pytest.approx(1.0)
    # half the importance on active features: the adversary finds a mask that moves the output
    half = _stored_error(toy, _oracle(toy, lambda x: 0.5 * active(x)))
    assert 0.05 < half < 1.0


def test_residual_is_a_maskable_channel() -> None:
    """Components that miss part of W: the rest is the residual, which the adversary can switch off."""
    toy = _toy()
    comps = [{"W": 0.5 * m.components["W"]} for m in toy.ground_truth.mechanisms]
    dec = Decomposition(comps, attributions=lambda x: torch.ones(x.shape[0], 6), faithful=True, importances=True)
    assert _stored_error(toy, dec) == pytest.approx(0.25, rel=1e-6)  # half of every output gone: (1/2)^2


def test_order_of_components_does_not_matter() -> None:
    toy = _toy()
    comps = [m.components for m in toy.ground_truth.mechanisms]
    g = torch.Generator().manual_seed(1)
    imp = torch.rand(eval_inputs(toy).shape[0], 6, generator=g)
    perm = [3, 0, 5, 1, 4, 2]
    a = Decomposition(comps, attributions=lambda x: imp, faithful=True, importances=True)
    b = Decomposition([comps[i] for i in perm], attributions=lambda x: imp[:, perm], faithful=True, importances=True)
    assert _stored_error(toy, a) == pytest.approx(_stored_error(toy, b), rel=1e-9)


def test_not_applicable_without_importances_or_faithfulness() -> None:
    toy = _toy()
    comps = [m.components for m in toy.ground_truth.mechanisms]
    ones = lambda x: torch.ones(x.shape[0], 6)  # noqa: E731
    assert _stored_error(toy, Decomposition(comps, attributions=ones, faithful=True)) is None
    assert _stored_error(toy, Decomposition(comps, attributions=ones, importances=True)) is None
    assert _stored_error(toy, Decomposition(comps, faithful=True, importances=True)) is None
    assert score(toy, Decomposition(comps, attributions=ones, faithful=True))["adversarial_error"] is None


def test_stored_importance_scale_round_trip_and_bad_values() -> None:
    toy = _toy()
    x = eval_inputs(toy)
    dec = _oracle(toy, lambda x: 0.8 * toy.ground_truth.active(x).double())
    stored = StoredDecomposition.capture(dec, x)
    assert stored.importance_scale == pytest.approx(0.8)
    back = StoredDecomposition.from_bytes(stored.to_bytes()).decomposition(x)
    assert back.importances and back.importance_scale == pytest.approx(0.8)
    assert float(back.attributions(x).max()) == pytest.approx(1.0)  # stored relative, as every attribution
    plain = StoredDecomposition.capture(Decomposition(dec.components, attributions=dec.attributions), x)
    assert plain.importance_scale is None and b"importance_scale" not in plain.to_bytes()
    with pytest.raises(DecompositionError, match=r"\[0, 1\]"):
        StoredDecomposition.capture(_oracle(toy, lambda x: 3 * torch.ones(x.shape[0], 6)), x)
    for bad in ("2.5", '"x"', "true", "{"):
        data = _with_meta(stored.to_bytes(), "importance_scale", bad)
        with pytest.raises(StoredDecompositionError, match="importance scale"):
            StoredDecomposition.from_bytes(data)


def _with_meta(data: bytes, key: str, value: str) -> bytes:
    """A safetensors file with one header entry replaced (the header is JSON after an 8-byte length)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"][key] = value
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + data[8 + n :]


def test_chunked_inputs_give_the_same_error(monkeypatch) -> None:  # noqa: ANN001
    """Large networks are searched over chunks of inputs, one backward per chunk (resid_mlp1 once failed here
    with a graph shared across chunks); the error is the one the whole batch gives."""
    import benchmark.metrics.adversarial as adv

    toy = _toy()
    active = lambda x: toy.ground_truth.active(x).double()  # noqa: E731
    dec = _oracle(toy, lambda x: 0.5 * active(x))
    whole = _stored_error(toy, dec)
    monkeypatch.setattr(adv, "MAX_ELEMENTS", 24 * 100)  # 24 weights: chunks of 100 inputs
    assert _stored_error(toy, dec) == pytest.approx(whole, rel=1e-9)


def test_each_matrix_summed_over_its_own_components_is_the_dense_sum(toy, monkeypatch) -> None:
    """SPD-like components, each in one weight matrix of a two-matrix toy: the masked sum taken per matrix over
    the components that touch it gives the error of the sum over every component (exact zeros skipped)."""
    import benchmark.metrics.adversarial as adversarial

    t = toy("block_mlp")
    g = torch.Generator().manual_seed(2)
    comps = []  # each matrix as the rank-1 terms of its SVD: faithful, so the importances decide what is kept
    for name, p in t.target().params().items():
        u, s, vh = torch.linalg.svd(p.detach())
        comps += [{name: s[i] * u[:, i : i + 1] @ vh[i : i + 1]} for i in range(len(s))]
    imp = torch.rand(eval_inputs(t).shape[0], len(comps), generator=g)
    dec = Decomposition(comps, attributions=lambda x: imp, faithful=True, importances=True)
    space = ComponentSpace(t, dec)
    sizes = [p.numel() for p in t.target().params().values()]
    blocks = adversarial._blocks(space.raw.attributions, space.raw.components, sizes)
    assert [rows.tolist() for rows, _, _ in blocks] == [list(range(12)), list(range(12, 24))]  # each its own
    per_matrix = adversarial_error(space.raw)
    monkeypatch.setattr(adversarial, "_blocks", lambda g, c, sizes: [(None, g, b) for b in c.split(sizes, dim=1)])
    assert per_matrix > 0.01 and per_matrix == pytest.approx(adversarial_error(space.raw), rel=1e-12)
