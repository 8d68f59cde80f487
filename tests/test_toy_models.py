"""The ground truth of every registered toy model, tested rather than asserted (issue 3).

For each model: the exact components sum to the decomposed weights; ablating a mechanism (subtracting
its component, or projecting its subspace out of the weights) changes the output on inputs that use it
and leaves the others unchanged within the locality the model declares; ``active()`` agrees with the
activation rate it declares; the spec and the build record are complete.

What may differ between models is stated on the model (``ToyModel.locality``, ``locality_ratio``,
``ablation_moved_share``, ``activation_rate``, ``drops_zero_inputs``; docs/adding_a_toy.md), so these
checks run unchanged on a toy registered by a plugin: ``PluginToy`` below is one. To run them on the toys of
your own plugin files: ``PDBENCH_TEST_PLUGINS=my_toy.py python -m pytest tests/test_toy_models.py``
(several files separated by ``os.pathsep``); toys installed under the ``pdbench.toy_models`` entry point are
included without it.
"""

from __future__ import annotations

import math
import os
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from benchmark.cache import WeightCache
from benchmark.names import family, instance
from benchmark.registry import TOY_MODELS, load_plugin
from benchmark.toy import LinearSite, Locality, Mechanism, ToyModel, ToyModelSpec, load_toy

for _path in filter(None, os.environ.get("PDBENCH_TEST_PLUGINS", "").split(os.pathsep)):
    load_plugin(_path)
REGISTERED = sorted(TOY_MODELS.names())
# every instance the headline suite scores is a toy of its own (its structure, weights and rotations are drawn
# from the toy seed), so each passes the same checks
INSTANCES = [f"{n}@{i}" for n in REGISTERED if TOY_MODELS.get(n)().track == "headline" for i in (1, 2)]
PLUGIN = "plugin_linear_toy"  # registered by the ``plugin_toy`` fixture, for this module's tests only
ZOO = [*REGISTERED, *INSTANCES, PLUGIN]
N_EVAL = 4096


class PluginNet(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(n, n))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.W.T


class PluginToy(ToyModel):
    """A minimal toy as a plugin file would define it, with every fact left at its default: ``y = W x`` with
    a dense W set from the seed, 4 independent features (p = 0.3, U[0,1)), mechanism i = column i of W."""

    def __init__(self, n: int = 4, p_active: float = 0.3, seed: int = 0, name: str = PLUGIN):
        super().__init__()
        self.n, self.p = n, p_active
        self.spec = ToyModelSpec(
            name=name,
            tier=0,
            version="1",
            seed=seed,
            gt_status="exact",
            description=f"y = W x, {n} sparse features (p={p_active}); one mechanism per column of W.",
            paper="(test plugin)",
            decomposed=("W",),
        )

    def make_model(self) -> nn.Module:
        return PluginNet(self.n)

    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        with torch.no_grad():
            model.W.copy_(torch.randn(self.n, self.n, generator=torch.Generator().manual_seed(seed)))
        return {"hand_built": True}

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        on = torch.rand(n, self.n, generator=generator) < self.p
        return torch.rand(n, self.n, generator=generator) * on

    def mechanisms(self, model: nn.Module) -> list[Mechanism]:
        out = []
        for i in range(self.n):
            mask = torch.zeros(self.n, self.n, dtype=torch.bool)
            mask[:, i] = True
            out.append(Mechanism(f"col{i}", support={"W": mask}, components={"W": torch.where(mask, model.W, 0.0)}))
        return out

    def active(self, inputs: Tensor) -> Tensor:
        return inputs != 0

    def sites(self, model: nn.Module, inputs: Tensor) -> list[LinearSite]:
        return [LinearSite("W", inputs)]


class RowsAsMechanisms(PluginToy):
    """A wrong ground truth for the same network: mechanism i claimed to be row i of W (still summing to W),
    active when x_i is; removing a row moves output i on every input, so the declared exact locality fails."""

    def mechanisms(self, model: nn.Module) -> list[Mechanism]:
        out = []
        for i in range(self.n):
            mask = torch.zeros(self.n, self.n, dtype=torch.bool)
            mask[i] = True
            out.append(Mechanism(f"row{i}", support={"W": mask}, components={"W": torch.where(mask, model.W, 0.0)}))
        return out


def _unregister(name: str) -> None:
    # the registry has no public removal (names are meant to stay for the process); a test cleans up its own
    for table in (TOY_MODELS._objects, TOY_MODELS._lazy, TOY_MODELS._origins):
        table.pop(name, None)


@pytest.fixture(scope="module")
def plugin_toy(tmp_path_factory) -> Iterator[ToyModel]:
    """``PluginToy`` registered in ``TOY_MODELS`` (as a ``--plugin`` file's ``TOY_MODELS.register`` does),
    built through ``load_toy`` into a temporary weight cache, and unregistered afterwards."""
    TOY_MODELS.register(PLUGIN, PluginToy)
    try:
        yield load_toy(PLUGIN, cache=WeightCache(tmp_path_factory.mktemp("plugin_weights")))
    finally:
        _unregister(PLUGIN)


@pytest.fixture
def zoo(toy, request) -> Callable[[str], ToyModel]:
    """``zoo(name)``: the built toy ``name``, a built-in (session-shared) or the plugin."""

    def get(name: str) -> ToyModel:
        return request.getfixturevalue("plugin_toy") if name == PLUGIN else toy(name)

    return get


def ablated_params(toy: ToyModel, mech: Mechanism) -> dict[str, Tensor]:
    """The weights with mechanism ``mech`` removed (``Mechanism.removed_from``)."""
    return mech.removed_from({k: v.detach().clone() for k, v in toy.model.named_parameters()})


def run(toy: ToyModel, params: dict[str, Tensor], x: Tensor) -> Tensor:
    return functional_call(toy.model, {**dict(toy.model.named_buffers()), **params}, (x,))


def eval_inputs(toy: ToyModel, n: int = N_EVAL, seed: int = 123) -> Tensor:
    return toy.sample(n, torch.Generator().manual_seed(seed))


def check_facts(t: ToyModel) -> None:
    """The toy's declared facts are well formed."""
    assert t.locality in typing.get_args(Locality), f"locality {t.locality!r}"
    assert t.locality not in ("ratio", "perturb") or t.locality_ratio > 1, f"locality_ratio {t.locality_ratio}"
    assert 0 < t.ablation_moved_share <= 1, f"ablation_moved_share {t.ablation_moved_share}"
    assert t.activation_rate is None or 0 < t.activation_rate < 1, f"activation_rate {t.activation_rate}"
    assert isinstance(t.drops_zero_inputs, bool)


@pytest.mark.parametrize("name", ZOO)
def test_declared_facts_are_well_formed(zoo, name):
    check_facts(zoo(name))


@pytest.mark.parametrize("name", REGISTERED)
def test_every_builtin_model_states_its_activation_rate(name):
    t = TOY_MODELS.get(name)()
    if not type(t).__module__.startswith("toy_models."):
        pytest.skip("a plugin's toy may leave its activation rate unstated (then it is not checked)")
    assert t.activation_rate is not None, "a built-in toy states the rate its sampler makes"


def check_spec_and_build_record(t: ToyModel, name: str) -> None:
    spec = t.spec
    assert (
        spec.name == family(name) and spec.seed == instance(name) and spec.paper and spec.description and spec.version
    )
    assert spec.gt_status in ("exact", "strong", "contested")
    assert (spec.tier == 4) == (spec.gt_status == "contested"), "tier 4 is exactly the contested tier"
    named = dict(t.model.named_parameters())
    assert spec.decomposed and all(n in named for n in spec.decomposed)
    info = t.build_info
    assert info is not None and len(info.weights_sha256) == 64 and info.train_seed >= spec.seed
    assert info.weights_sha256 == t.weights_sha256()


@pytest.mark.parametrize("name", ZOO)
def test_spec_and_build_record(zoo, name):
    check_spec_and_build_record(zoo(name), name)


def check_mechanism_shapes_and_bases(t: ToyModel) -> None:
    shapes = t.param_shapes()
    mechs = t.ground_truth.mechanisms
    assert mechs and len({m.name for m in mechs}) == len(mechs)
    for m in mechs:
        assert set(m.support) <= set(shapes), m.name
        for k, s in m.support.items():
            assert s.dtype == torch.bool and s.shape == shapes[k] and s.any(), (m.name, k)
        if m.components is not None:
            for k, c in m.components.items():
                assert c.shape == shapes[k] and torch.isfinite(c).all(), (m.name, k)
                outside = c[~m.support[k]] if k in m.support else c
                assert outside.abs().max() <= 1e-6 * max(1.0, float(c.abs().max())) if outside.numel() else True, (
                    f"{m.name}: component mass outside its support in {k}"
                )
        b = m.basis(t.spec.decomposed, shapes)
        assert torch.allclose(b @ b.T, torch.eye(b.shape[0], dtype=b.dtype), atol=1e-6), m.name


@pytest.mark.parametrize("name", ZOO)
def test_mechanism_shapes_and_bases(zoo, name):
    check_mechanism_shapes_and_bases(zoo(name))


@pytest.mark.parametrize("name", ZOO)
def test_exact_components_sum_to_the_weights(zoo, name):
    t = zoo(name)
    mechs = t.ground_truth.mechanisms
    if t.spec.gt_status == "strong":
        assert all(m.components is None for m in mechs), "a strong ground truth claims no exact split"
        pytest.skip("support-level ground truth: no exact components to sum")
    assert all(m.components is not None for m in mechs)
    named = dict(t.model.named_parameters())
    for k in t.spec.decomposed:
        total = sum(m.components[k].double() for m in mechs if k in m.components)
        w = named[k].detach().double()
        err = float((total - w).abs().max())
        assert err <= 1e-5 * max(1.0, float(w.abs().max())), f"{k}: components miss the weights by {err:.2e}"


SUBSET = 12  # mechanisms checked per model in the default run; all of them under -m slow


def check_ablation(t: ToyModel, subset: int | None) -> None:
    """Removing each mechanism moves the output on the inputs that use it (on ``t.ablation_moved_share`` of
    them) and, on the others, only as far as ``t.locality`` allows."""
    x = eval_inputs(t)
    act = t.ground_truth.active(x)
    nonzero = x.ne(0).any(dim=1)
    y0 = t.model(x)
    scale = float(y0.abs().mean())
    mechs = list(enumerate(t.ground_truth.mechanisms))
    if subset is not None and len(mechs) > subset:
        pick = set(torch.linspace(0, len(mechs) - 1, subset).round().long().tolist())
        mechs = [(m, mech) for m, mech in mechs if m in pick or mech.always_on]
    for m, mech in mechs:
        if t.locality == "perturb":
            check_perturbation(t, mech, x, act[:, m], y0, t.locality_ratio)
            continue
        params = ablated_params(t, mech)
        y1 = run(t, params, x)
        delta = (y1 - y0).abs()
        per_input = delta.amax(dim=1)
        on, off = act[:, m], ~act[:, m]
        assert on.any(), f"{mech.name} never active on {N_EVAL} inputs"
        moved = (per_input[on & nonzero] > 1e-3 * scale).float().mean()
        need = t.ablation_moved_share
        assert moved >= need, f"{mech.name}: only {moved:.2f} of its inputs move (need {need})"
        if mech.always_on:
            assert not off.any()
            continue
        if t.locality == "exact":
            assert per_input[off].max() <= 1e-4 * scale + 1e-6, f"{mech.name}: moves inputs that do not use it"
        elif t.locality == "readout":  # mechanism m holds output m's read-out
            others = torch.ones(delta.shape[1], dtype=torch.bool)
            others[m] = False
            # float32 rounding, as for "exact" (a rotated input leaves ~1e-7 residues of the zero entries)
            assert delta[off][:, others].max() <= 1e-4 * scale + 1e-6, f"{mech.name}: moves outputs other than its own"
            fallback = run(t, params, torch.zeros_like(x[:1]))[0, m].abs()  # output m without it (TMS: ReLU(b_m))
            label = getattr(t, "to_base_inputs", lambda v: v)(x)  # feature m's value (a rotated toy: rotated back)
            bound = (y0[off, m] - label[off, m]).abs() + fallback
            assert (delta[off, m] <= bound + 1e-4 * scale + 1e-6).all(), (
                f"{mech.name}: moves output {m} more than the model's error"
            )
        else:
            assert t.locality == "ratio", t.locality
            got = per_input[on].mean() / per_input[off].mean().clamp_min(1e-12)
            assert got >= t.locality_ratio, f"{mech.name}: selectivity {got:.2f} < {t.locality_ratio}"


def check_perturbation(t: ToyModel, mech: Mechanism, x: Tensor, on: Tensor, y0: Tensor, ratio: float) -> None:
    names = t.spec.decomposed
    params = {k: v.detach() for k, v in t.model.named_parameters()}
    norm = float(torch.cat([params[k].reshape(-1) for k in names]).norm())
    basis = mech.basis(names, t.param_shapes()).float()
    sizes = [params[k].numel() for k in names]
    for v in basis:
        moved = dict(params)
        for k, piece in zip(names, v.split(sizes), strict=True):
            moved[k] = params[k] + 0.02 * norm * piece.reshape(params[k].shape)
        d = (run(t, moved, x) - y0).abs().amax(dim=1)
        got = float(d[on].mean() / d[~on].mean().clamp_min(1e-12))
        assert got >= ratio, f"{mech.name}: perturbation selectivity {got:.1f} < {ratio}"


@pytest.mark.parametrize("name", ZOO)
def test_ablation_is_local_to_the_inputs_that_use_the_mechanism(zoo, name):
    check_ablation(zoo(name), SUBSET)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_ablation_locality_every_mechanism(zoo, name):
    check_ablation(zoo(name), None)


def check_active(t: ToyModel, n: int = 20_000) -> None:
    """``active()`` is well formed and, where the toy states ``activation_rate``, every mechanism that is not
    always-on is active at that rate (within 5 sigma over ``n`` inputs); the sampler is deterministic."""
    x = t.sample(n, torch.Generator().manual_seed(7))
    act = t.ground_truth.active(x)
    mechs = t.ground_truth.mechanisms
    assert act.dtype == torch.bool and act.shape == (n, len(mechs))
    always = torch.tensor([m.always_on for m in mechs])
    assert act[:, always].all()
    expected = t.activation_rate
    if expected is not None:
        rates = act[:, ~always].float().mean(dim=0)
        sigma = math.sqrt(expected * (1 - expected) / n)
        assert (rates - expected).abs().max() <= 5 * sigma, (
            f"rates {rates.min():.4f}..{rates.max():.4f} vs the declared {expected:.4f}"
        )
    if t.drops_zero_inputs:
        assert x.ne(0).any(dim=1).all(), "the generator drops all-zero rows"
    # same seed, same inputs
    assert torch.equal(x, t.sample(n, torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("name", ZOO)
def test_active_agrees_with_the_generator(zoo, name):
    check_active(zoo(name))


# -- the checks can fail: a toy whose declared facts are wrong is caught ------------------------------------
@pytest.fixture
def built_plugin(tmp_path) -> Callable[..., ToyModel]:
    """``built_plugin(cls, **facts)``: an instance of ``cls`` with the given facts set, built in a fresh cache."""

    def build(cls: type[PluginToy] = PluginToy, **facts: Any) -> ToyModel:
        t = cls()
        for k, v in facts.items():
            assert hasattr(ToyModel, k), k
            setattr(t, k, v)
        return t.build(WeightCache(tmp_path))

    return build


def test_the_plugin_passes_with_its_true_rate_stated(built_plugin):
    check_active(built_plugin(activation_rate=0.3))


@pytest.mark.parametrize(
    "facts, message",
    [
        ({"activation_rate": 0.25}, "declared 0.2500"),  # its sampler makes 0.3
        ({"activation_rate": 0.3, "drops_zero_inputs": True}, "drops all-zero rows"),  # it keeps them (24%)
    ],
    ids=["rate", "drops-zero-rows"],
)
def test_a_wrong_activation_fact_fails_the_rate_check(built_plugin, facts, message):
    t = built_plugin(**facts)
    with pytest.raises(AssertionError, match=message):
        check_active(t)


def test_a_wrong_locality_fails_the_ablation_check(built_plugin):
    check_ablation(built_plugin(PluginToy), None)  # columns: exactly local, as declared by default
    with pytest.raises(AssertionError, match="moves inputs that do not use it"):
        check_ablation(built_plugin(RowsAsMechanisms), None)
    with pytest.raises(AssertionError, match="selectivity"):
        check_ablation(built_plugin(RowsAsMechanisms, locality="ratio", locality_ratio=10.0), None)


def test_tms_identity_is_frozen_and_matches_plain_tms(toy):
    for small, big in (("tms_5-2", "tms_5-2-id"), ("tms_40-10", "tms_40-10-id")):
        plain, ident = toy(small), toy(big)
        m1 = ident.model.W.shape[0]
        assert torch.equal(ident.model.hidden_layer, torch.eye(m1))
        # H = I makes the training plain TMS's, up to float summation order (measured: 6e-4 of 0.89 on 40-10)
        assert torch.allclose(plain.model.W, ident.model.W, atol=5e-3 * float(plain.model.W.abs().max()))
        ident_mechs = [m for m in ident.ground_truth.mechanisms if m.name.startswith("identity")]
        assert len(ident_mechs) == 1 and ident_mechs[0].always_on  # one mechanism: I itself
        assert torch.equal(ident_mechs[0].components["hidden_layer"], torch.eye(m1))


def test_higher_rank_mechanisms_have_rank_above_one(toy):
    t = toy("higher_rank_30-10-30")
    groups = [m for m in t.ground_truth.mechanisms if m.name.startswith("group")]
    assert len(groups) == 6
    for m in groups:
        W = m.components["W_in"]
        assert torch.linalg.matrix_rank(W) == 5  # one exact rank-5 matrix (no span: a sliver must not score)
    x = t.sample(2000, torch.Generator().manual_seed(0))
    nz = x.ne(0).view(-1, 6, 5)
    assert (nz.all(dim=2) | ~nz.any(dim=2)).float().mean() > 0.999, "groups switch on together"


def test_tmcs_coefficients_fixed_by_seed(toy):
    t = toy("tmcs_10-5-10")
    A = t.model.A
    assert A.shape == (10, 10) and A.min() >= 0 and A.max() < 3
    assert torch.equal(A, torch.rand(10, 10, generator=torch.Generator().manual_seed(t.build_info.train_seed)) * 3)


def test_a_too_high_moved_share_fails_the_ablation_check(built_plugin):
    t = built_plugin(ablation_moved_share=1.0)  # a few inputs use col0 with x_0 so small that nothing moves
    with pytest.raises(AssertionError, match="of its inputs move"):
        check_ablation(t, None)
