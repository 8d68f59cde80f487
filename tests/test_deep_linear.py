"""Deep linear networks (issue "New toys from the field: deep linear networks"): identity layers read out by
softmax(beta x), their cross-layer ground truth, and the rotated variants (toy_models/deep_linear.py)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.func import functional_call

from benchmark.decomposition import Decomposition
from benchmark.method import Budget
from benchmark.registry import METHODS, TOY_MODELS
from benchmark.scoring import score
from benchmark.toy import ToyModel
from toy_models.deep_linear import BETA, ROTATED, SIZES, DeepLinear, rotation_plan
from toy_models.rotated import RotatedToy

pytestmark = pytest.mark.usefixtures("one_thread")  # toy-sized matrices: a thread pool only slows them down

PLAIN = sorted(SIZES)
ROT = sorted(f"{n}-rot" for n in ROTATED)
ALL = PLAIN + ROT


def inputs(t: ToyModel, n: int = 2048, seed: int = 5) -> Tensor:
    return t.sample(n, torch.Generator().manual_seed(seed))


def base_inputs(t: ToyModel, x: Tensor) -> Tensor:
    """``x`` in the unrotated coordinates (a plain toy's are its own)."""
    return t.to_base_inputs(x) if isinstance(t, RotatedToy) else x


def without(t: ToyModel, parts: dict[str, Tensor]) -> dict[str, Tensor]:
    params = {k: v.detach().clone() for k, v in t.model.named_parameters()}
    for k, c in parts.items():
        params[k] = params[k] - c
    return params


def run(t: ToyModel, params: dict[str, Tensor], x: Tensor) -> Tensor:
    return functional_call(t.model, params, (x,))


def test_registered_names_and_tracks() -> None:
    names = {n for n in TOY_MODELS.names() if n.startswith("deep_linear")}
    assert names == set(ALL)
    for n in ALL:
        t = TOY_MODELS.get(n)()
        assert t.track == "diagnostic" and t.spec.tier == 0 and t.spec.gt_status == "exact", n
        assert "experiments/deep_linear" in t.spec.paper


@pytest.mark.parametrize("name", PLAIN)
def test_the_network_is_a_product_of_identities(toy, name) -> None:  # noqa: ANN001
    t = toy(name)
    n_layers, d, _ = SIZES[name]
    assert t.spec.decomposed == tuple(f"W{i}" for i in range(n_layers))
    for p in t.target().params().values():
        assert torch.equal(p, torch.eye(d))
    x = inputs(t)
    assert torch.equal(t.model(x), torch.softmax(BETA * x, dim=-1))
    assert float(t.loss(t.model(x), x)) == pytest.approx(0.0, abs=1e-7)  # KL to its own output
    assert float(t.loss(torch.full_like(x, 1.0 / d), x)) > 0.1  # a uniform guess is far from it


@pytest.mark.parametrize("name", ROT)
def test_the_rotated_network_computes_what_its_construction_says(toy, name) -> None:  # noqa: ANN001
    rot, base = toy(name), toy(name.removesuffix("-rot"))
    n_layers, d, _ = SIZES[base.spec.name]
    q = [rot.rotations[f"h{i}"] for i in range(n_layers)] + [torch.eye(d, dtype=torch.float64)]  # Q_L = I
    for i, W in enumerate(rot.model.layers()):  # layer i is Q_{i+1} Q_i^T: dense, not the identity
        assert torch.allclose(W.double(), q[i + 1] @ q[i].T, atol=1e-6), i
        assert (W.abs() > 1e-3).float().mean() > 0.5
    x = inputs(base)
    x_rot = rot.sample(x.shape[0], torch.Generator().manual_seed(5))
    assert torch.allclose(x_rot.double(), x.double() @ q[0].T, atol=1e-6)  # the sampler returns Q_0 x
    # the same function: y(Q_0 x) = softmax(beta x), the output not rotated (the softmax keeps its basis)
    assert torch.allclose(rot.model(x_rot), torch.softmax(BETA * x, dim=-1), atol=1e-5)
    assert float(rot.loss(rot.model(x_rot), x_rot)) == pytest.approx(0.0, abs=1e-6)
    assert rot.plan == rotation_plan(n_layers)


@pytest.mark.parametrize("name", ALL)
def test_mechanisms_and_their_pieces_sum_exactly_to_the_weights(toy, name) -> None:  # noqa: ANN001
    t = toy(name)
    n_layers, d, _ = SIZES[name.removesuffix("-rot")]
    mechs = t.ground_truth.mechanisms
    assert [m.name for m in mechs] == [f"dim{i}" for i in range(d)]
    for m in mechs:
        assert set(m.components) == set(t.spec.decomposed) and m.refinement is not None
        assert len(m.refinement) == n_layers and all(len(p) == 1 for p in m.refinement)  # one layer each
        for p in m.refinement:
            ((k, v),) = p.items()
            assert torch.equal(v, m.components[k])
        sv = torch.linalg.svdvals(torch.stack([m.components[k] for k in t.spec.decomposed]).double())
        assert float((sv[:, 1] / sv[:, 0]).max()) < 1e-5, m.name  # rank 1 in every layer
    for k, W in t.target().params().items():
        total = sum(m.components[k].double() for m in mechs)
        tol = 0.0 if name in PLAIN else 1e-6
        assert float((total - W.double()).abs().max()) <= tol, k


@pytest.mark.parametrize("name", ALL)
def test_removing_a_mechanism_moves_only_the_inputs_that_use_it(toy, name) -> None:  # noqa: ANN001
    """Removing dimension i (in every layer, or in any one layer: the same function) changes the output on
    inputs with x_i != 0, and on no other input beyond float rounding."""
    t = toy(name)
    x = inputs(t)
    on = inputs(toy(name.removesuffix("-rot"))).ne(0)  # the same draw, unrotated: which x_i are on
    y0 = t.model(x)
    scale = float(y0.abs().mean())
    for i, m in enumerate(t.ground_truth.mechanisms):
        whole = (run(t, without(t, m.components), x) - y0).abs().amax(dim=1)
        assert float(whole[~on[:, i]].max()) <= 1e-4 * scale, (m.name, "moves an input without x_i")
        assert float((whole[on[:, i]] > 1e-3 * scale).float().mean()) > 0.95, m.name
        for piece in (m.refinement[0], m.refinement[-1]):  # one layer's piece alone: the same effect
            alone = (run(t, without(t, piece), x) - y0).abs().amax(dim=1)
            assert torch.allclose(alone, whole, atol=1e-4 * scale), m.name


@pytest.mark.parametrize("name", ALL)
def test_active_agrees_with_the_data(toy, name) -> None:  # noqa: ANN001
    t = toy(name)
    _, d, k = SIZES[name.removesuffix("-rot")]
    x = inputs(t, 20_000, seed=11)
    xb = inputs(toy(name.removesuffix("-rot")), 20_000, seed=11)  # the same draw, unrotated
    act = t.ground_truth.active(x)
    assert torch.equal(act, xb.ne(0))  # the active coordinates are the non-zero ones, rotated or not
    assert torch.equal(act.sum(dim=1), torch.full((x.shape[0],), k))  # exactly k coordinates on
    assert float(xb.min()) >= 0 and float(xb.max()) <= 1  # values U[0, 1]
    assert torch.allclose(base_inputs(t, x), xb, atol=1e-6)
    assert t.activation_rate == pytest.approx(k / d)
    rate = act.float().mean(dim=0)  # every coordinate equally likely
    assert float((rate - k / d).abs().max()) < 5 * (k / d * (1 - k / d) / x.shape[0]) ** 0.5
    assert torch.equal(x, inputs(t, 20_000, seed=11))


def test_determinism_for_a_seed() -> None:
    a, b = DeepLinear(3, 6, 2), DeepLinear(3, 6, 2)
    na, nb = a.make_model(), b.make_model()
    a.fit(na, 3)
    b.fit(nb, 3)
    assert all(torch.equal(u, v) for u, v in zip(na.state_dict().values(), nb.state_dict().values(), strict=True))
    assert DeepLinear(3, 6, 2).cache_key != DeepLinear(3, 7, 2).cache_key  # other sizes, other cache entries
    assert TOY_MODELS.get("deep_linear_4x10")().cache_key == "deep_linear_4x10-v1-seed0"
    # the rotations (the only thing an instance draws) come from the seed alone
    r0, r0b, r1 = (TOY_MODELS.get("deep_linear_4x10-rot")(seed=s) for s in (0, 0, 1))
    assert all(torch.equal(r0.rotations[k], r0b.rotations[k]) for k in r0.rotations)
    assert not torch.allclose(r0.rotations["h0"], r1.rotations["h0"])
    assert sorted(r0.rotations) == ["h0", "h1", "h2", "h3"]


@pytest.mark.parametrize("name", ALL)
def test_the_oracle_scores_one(toy, name) -> None:  # noqa: ANN001
    t = toy(name)
    dec = METHODS.get("oracle")().decompose(t.target(with_ground_truth=True), Budget(), 0)
    s = score(t, dec, ["hungarian", "hungarian_raw", "mmcs"])
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in s.values()), s


@pytest.mark.parametrize("name", ["deep_linear_4x10", "deep_linear_8x20-rot"])
def test_the_per_layer_pieces_score_as_the_mechanisms(toy, name) -> None:  # noqa: ANN001
    """The reference's ground truth, one rank-1 piece per dimension per layer, is the declared refinement."""
    t = toy(name)
    pieces = [dict(p) for m in t.ground_truth.mechanisms for p in m.refinement]
    assert len(pieces) == SIZES[name.removesuffix("-rot")][0] * SIZES[name.removesuffix("-rot")][1]
    s = score(t, Decomposition(pieces, faithful=True), ["hungarian", "hungarian_raw"])
    assert s["hungarian_raw"] == pytest.approx(1.0) and s["hungarian"] == pytest.approx(1.0)
    # two dimensions merged into one cross-layer unit are not a refinement: a merge, and costly
    merged = [
        {k: a.components[k] + b.components[k] for k in t.spec.decomposed}
        for a, b in zip(t.ground_truth.mechanisms[::2], t.ground_truth.mechanisms[1::2], strict=True)
    ]
    assert score(t, Decomposition(merged, faithful=True), ["hungarian"])["hungarian"] < 0.6


def test_the_rotation_hides_the_basis_but_not_the_data(toy) -> None:  # noqa: ANN001
    """Why the family is diagnostic: the neuron basis solves the plain toy and not the rotated one, but ICA of
    each layer's inputs finds the rotated pieces (the inputs stay sparse in the rotated basis)."""
    from benchmark.headroom import headroom

    plain, rot = headroom(toy("deep_linear_4x10")), headroom(toy("deep_linear_4x10-rot"))
    assert plain.scores["neuron"] == pytest.approx(1.0) and rot.scores["neuron"] < rot.scores["random"] + 0.1
    assert rot.scores["ica"] > 0.7 and not rot.passed
