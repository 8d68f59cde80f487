"""The compiled induction-head transformer (tier 5): the circuit works, is used, and survives the rotation.

The ground-truth contract (exact sum, ablation locality, ``active()`` against the data) is checked on every
registered toy by tests/test_toy_models.py; here, what is particular to a sequence model.
"""

from __future__ import annotations

import pytest
import torch

from benchmark.method import Budget
from benchmark.registry import METHODS
from benchmark.toy import per_input
from toy_models.induction import Induction


@pytest.fixture(scope="module")
def pair(toy):  # noqa: ANN001
    return toy("induction"), toy("induction-rot")


def _inputs(t: Induction, n: int = 2048) -> torch.Tensor:
    return t.sample(n, torch.Generator().manual_seed(3))


def test_the_sequences_hold_one_earlier_match(pair) -> None:  # noqa: ANN001
    t, _ = pair
    tok = t.tokens(4096, torch.Generator().manual_seed(1))
    S, M = t.decode(torch.nn.functional.one_hot(tok, t.V + 1).float().reshape(4096, -1))
    assert (tok[:, 0] == t.V).all() and (tok[:, 1:] < t.V).all()  # BOS, then the vocabulary
    assert ((tok == S[:, None]).sum(dim=1) == 2).all()  # S exactly twice: once earlier, once last
    assert (M != S).all()
    first = (tok[:, :-1] == S[:, None]).float().argmax(dim=1)
    assert ((first >= 1) & (first <= t.T - 3)).all()
    assert set(first.tolist()) == set(range(1, t.T - 2))  # every allowed position occurs


def test_the_compiled_circuit_predicts_the_token_after_the_match(pair) -> None:  # noqa: ANN001
    for t in pair:
        x = _inputs(t)
        y = t.model(x)
        _, M = t.decode(x)
        assert torch.equal(y.argmax(dim=1), M)
        assert float(t.loss(y, x)) < 1e-3


def test_the_rotation_changes_the_weights_not_the_function(pair) -> None:  # noqa: ANN001
    plain, rot = pair
    x = _inputs(plain)
    assert torch.allclose(plain.model(x), rot.model(x), atol=1e-4)
    for name in plain.spec.decomposed:
        a, b = getattr(plain.model, name), getattr(rot.model, name)
        assert (a != 0).float().mean() < 0.2 < (b != 0).float().mean(), name  # sparse slots become dense


@pytest.mark.parametrize("head", ["W_O0", "W_O1", "W_Q1", "W_K0"])
def test_each_head_is_needed(pair, head) -> None:  # noqa: ANN001
    """Zeroing either head's output, or the query or key side of a match, drops accuracy to about chance."""
    t = pair[1]
    x = _inputs(t)
    _, M = t.decode(x)
    params = dict(t.model.named_parameters())
    params[head] = torch.zeros_like(params[head])
    y = torch.func.functional_call(t.model, params, (x,))
    assert float((y.argmax(dim=1) == M).float().mean()) < 0.4


def test_activity_is_one_match_and_one_copy_per_input(pair) -> None:  # noqa: ANN001
    t = pair[0]
    act = t.ground_truth.active(_inputs(t))
    V = t.V
    assert (act[:, :V].sum(dim=1) == 1).all() and (act[:, V : 2 * V].sum(dim=1) == 1).all() and act[:, -1].all()
    names = t.ground_truth.names
    assert names[0] == "match_0" and names[V] == "copy_0" and names[-1] == "prev_attn"


def test_sites_read_one_row_per_position(pair) -> None:  # noqa: ANN001
    t = pair[1]
    x = _inputs(t, 16)
    sites = t.sites(t.model, x)
    assert [s.param for s in sites] == list(t.spec.decomposed)
    assert all(s.inputs.shape[0] == 16 * t.T for s in sites)


def test_per_input_takes_the_largest_row_of_each_input() -> None:
    rows = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 1.0], [0.5, 0.5]])  # 2 inputs x 2 positions
    assert torch.equal(per_input(rows, 2), torch.tensor([[1.0, 3.0], [2.0, 1.0]]))
    assert per_input(rows, 4) is rows
    with pytest.raises(ValueError, match="do not split"):
        per_input(rows, 3)


@pytest.mark.parametrize("method", ["pca", "ica", "neuron", "lib"])
def test_activation_methods_give_per_sequence_attributions(pair, method) -> None:  # noqa: ANN001
    t = pair[1]
    hp = {"n_samples": 2048} if method in ("ica", "pca") else {}  # a smaller fit: this checks shapes only
    dec = METHODS.get(method)(**hp).decompose(t.target(), Budget(), 0)
    a = dec.attributions(_inputs(t, 64))
    assert a.shape == (64, len(dec.components)) and torch.isfinite(a).all()


def test_the_trained_variant_learned_the_circuit_its_ground_truth_names(toy) -> None:  # noqa: ANN001
    """Trained to (near) perfect accuracy; projecting out any mechanism's span breaks the inputs that use it
    and leaves the others (``health`` checks this at build and records it)."""
    t = toy("induction_trained")
    info: dict = {}
    assert t.health(t.model, info) is None  # on the weights it ships, checked here (not read from the file)
    assert info == {k: t.build_info.extra[k] for k in info}
    assert info["accuracy"] >= 0.99
    assert info["ablated_accuracy_worst_on"] <= 0.75 and info["ablated_accuracy_worst_off"] >= 0.95
    assert t.spec.gt_status == "strong" and all(m.subspace is not None for m in t.ground_truth.mechanisms)
    assert len(t.ground_truth.mechanisms) == 2 * t.V


@pytest.mark.parametrize(
    ("method", "hp"), [("spd", {"C": 4, "batch_size": 8, "n_eval": 64}), ("apd", {"C": 3, "batch_size": 8}),
                       ("l3d", {"n_v": 3})],
)  # fmt: skip
def test_training_methods_run_on_attention_and_attribute_per_sequence(pair, method, hp) -> None:  # noqa: ANN001
    """Every decomposed matrix is a plain linear site, so the parameter-space methods need nothing special:
    two steps each, and per-sequence attributions (SPD's per-position importances reduced by ``per_input``)."""
    t = pair[1]
    dec = METHODS.get(method)(**hp).decompose(t.target(), Budget(steps=2), 0)
    a = dec.attributions(_inputs(t, 16))
    assert a.shape == (16, len(dec.components)) and torch.isfinite(a).all()
