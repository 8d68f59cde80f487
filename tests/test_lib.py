"""LIB (interaction basis): its own invariants (docs/reference/lib_pca.md 2.5, 4.7, 5.6) and the
parameter components built from it (5.1-5.3)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from benchmark.decomposition import Decomposition
from benchmark.method import Budget
from benchmark.scoring import score
from benchmark.toy import LinearSite, Target, ToyModelSpec
from methods._activation_bases import pca_basis
from methods._attribution import gradient_attributions
from methods._lib_basis import lib_basis
from methods._lib_graph import build_graph, elementwise_derivative, section_edges
from methods.lib import LIB, fit_lib
from methods.pca import PCA

torch.set_num_threads(1)


class Chain(nn.Module):
    """y = W3 phi(W2 phi(W1 x)) with phi identity or ReLU, no biases."""

    def __init__(self, widths: list[int], relu: bool, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.relu = relu
        self.names = [f"W{i + 1}" for i in range(len(widths) - 1)]
        for n, (a, b) in zip(self.names, zip(widths[:-1], widths[1:], strict=True), strict=True):
            self.register_parameter(n, nn.Parameter(torch.randn(b, a, generator=g) / a**0.5))

    def acts(self, x: Tensor) -> list[Tensor]:
        out = [x]
        for n in self.names[:-1]:
            z = out[-1] @ getattr(self, n).T
            out.append(torch.relu(z) if self.relu else z)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.acts(x)[-1] @ getattr(self, self.names[-1]).T


def chain_target(widths: list[int], relu: bool, sample=None, seed: int = 0) -> Target:
    model = Chain(widths, relu, seed)
    for p in model.parameters():
        p.requires_grad_(False)
    spec = ToyModelSpec("test_chain", 0, "1", seed, "exact", "test chain", "none", tuple(model.names))
    sample = sample or (lambda n, g: torch.randn(n, widths[0], generator=g))
    return Target(
        spec,
        model,
        sample,
        lambda out, x: out.pow(2).mean(),
        lambda x: [LinearSite(n, a) for n, a in zip(model.names, model.acts(x), strict=True)],
    )


def component_sum(dec: Decomposition, params: dict[str, Tensor]) -> dict[str, Tensor]:
    total = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    for i in range(len(dec)):
        for n, v in dec.dense(i).items():
            total[n] += v.to(torch.float64)
    return total


def block_purity(read: Tensor, n_blocks: int) -> Tensor:
    """Per feature: the largest share of its read vector's squared norm inside one block."""
    mass = read.pow(2).reshape(n_blocks, read.shape[0] // n_blocks, -1).sum(1)
    return (mass / mass.sum(0)).max(0).values


# -- the basis itself ---------------------------------------------------------------------------------
def test_features_uncorrelated_with_variance_lambda():
    g = torch.Generator().manual_seed(0)
    f = (
        torch.randn(5000, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
        + 3.0
    )
    J = torch.randn(4, 6, generator=g, dtype=torch.float64)
    b = lib_basis(f, J.T @ J)
    assert b.rank == 4  # J has rank 4: two directions have no downstream effect and are dropped
    feats = b.coords(f)
    cov = feats.T @ feats / f.shape[0]
    assert torch.allclose(feats.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(cov, torch.diag(b.scale), rtol=1e-9, atol=1e-9 * float(b.scale.max()))
    assert torch.allclose(b.read.T @ b.write, torch.eye(4, dtype=torch.float64), atol=1e-10)
    assert bool((b.scale[:-1] >= b.scale[1:]).all())


def test_lambda_is_squared_gradient_norm_and_rotation_invariant():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(4000, 5, generator=g, dtype=torch.float64)
    J = torch.randn(3, 5, generator=g, dtype=torch.float64)
    b = lib_basis(f, J.T @ J)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    b2 = lib_basis(f, (Q @ J).T @ (Q @ J))  # an orthogonal rotation of the next layer changes nothing
    assert torch.allclose(b.scale, b2.scale, rtol=1e-9)
    # Lambda_i = E ||d f_hat_next / d f_tilde_i||^2 with f_tilde_i = f_hat_i / sqrt(Lambda_i)
    grads = J @ b.write * b.scale.sqrt()
    assert torch.allclose(grads.pow(2).sum(0), b.scale, rtol=1e-9)


def test_constant_direction_keeps_the_mean_outside_the_variance_span():
    g = torch.Generator().manual_seed(2)
    f = torch.cat(
        [torch.randn(3000, 3, generator=g, dtype=torch.float64), torch.full((3000, 1), 2.0, dtype=torch.float64)], dim=1
    )  # a constant, zero-variance neuron
    b = pca_basis(f)
    assert b.rank == 3 and b.const_read is not None
    assert torch.allclose(f @ b.projector().T, f, atol=1e-10)  # exact reconstruction on the data


# -- sections between node layers ---------------------------------------------------------------------
def test_elementwise_sections_are_identified_and_others_refused():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(500, 4, generator=g)
    b = torch.tensor([0.5, -0.2, 0.0, -10.0])  # the last coordinate is a dead neuron
    d, kind = elementwise_derivative(z, torch.relu(z + b))
    assert kind == "relu" and torch.equal(d, (z + b > 0).double())
    assert elementwise_derivative(z, z + b)[1] == "identity"
    assert elementwise_derivative(z, torch.tanh(z)) is None
    assert elementwise_derivative(z, z[:, [1, 0, 2, 3]]) is None  # a permutation is not element-wise
    assert elementwise_derivative(z, z[:, :3]) is None


# -- LIB on networks ----------------------------------------------------------------------------------
def _assert_diagonal(E: Tensor) -> None:
    r = min(E.shape)
    off = E.clone()
    off[range(r), range(r)] = 0.0
    assert float(off.sum()) <= 1e-10 * float(E.sum())
    assert float(E.diagonal().min()) > 0


def test_linear_chain_gives_diagonal_edges():
    target = chain_target([6, 5, 4, 3], relu=False)
    m = LIB(n_samples=4000, n_edge_samples=4000)
    m.decompose(target, Budget(), seed=0)
    inner = [E for _, nxt, E in m.last_fit.edges if nxt is not None]
    assert len(inner) == 2
    for E in inner:
        _assert_diagonal(E)
    # into the output, edges are diagonal once the output is rotated onto its principal directions
    # (rib's rotate_final_node_layer); the unrotated output is the default
    k, _, _ = next(e for e in m.last_fit.edges if e[1] is None)
    r = m.last_fit.graph.readers[k]
    f = m.last_fit.graph.nodes[r.node]
    out_pca = pca_basis(f @ r.weight.T)
    _assert_diagonal(section_edges(r, m.last_fit.bases[r.node], f, out_pca.read, r.out_derivative))


def test_components_sum_to_the_weights_and_act_alike_on_data():
    target = chain_target([5, 7, 6, 3], relu=True, seed=4)
    dec = LIB(n_samples=5000).decompose(target, Budget(), seed=0)
    params = target.params()
    total = component_sum(dec, params)
    for n, p in params.items():
        assert torch.allclose(total[n], p.double(), atol=1e-5 * float(p.abs().max()))
    assert dec.faithful
    kinds = dec.record.extra["kinds"]
    assert set(kinds) <= {"feature", "const", "residual"}
    # without the residual, the read-side pieces still reproduce W f on the data (dropped directions carry
    # no variance or no downstream effect)
    x = target.sample(2000, torch.Generator().manual_seed(9))
    sites = target.sites(x)
    for s, site in enumerate(sites):
        W = params[site.param].double()
        kept = sum(
            dec.dense(i)[site.param].double()
            for i, k in enumerate(kinds)
            if k != "residual" and site.param in dec.components[i]
        )
        out_true = torch.relu(site.inputs.double() @ W.T)
        out_kept = torch.relu(site.inputs.double() @ kept.T)
        if s == len(sites) - 1:
            out_true, out_kept = site.inputs.double() @ W.T, site.inputs.double() @ kept.T
        assert torch.allclose(out_kept, out_true, atol=1e-6 * float(out_true.abs().max()))


def test_same_seed_same_decomposition(toy):
    t = toy("tms_5-2")
    a = LIB().decompose(t.target(), Budget(), seed=3)
    b = LIB().decompose(t.target(), Budget(), seed=3)
    shapes = t.param_shapes()
    assert torch.equal(a.flat(t.spec.decomposed, shapes), b.flat(t.spec.decomposed, shapes))


def test_block_model_lib_stays_in_blocks_and_groups_recover_them(toy):
    t = toy("block_mlp")
    k = t.k
    x = t.sample(50_000, torch.Generator().manual_seed(0))
    cov = torch.cov(x.T.double())
    ev = torch.linalg.eigvalsh(cov)
    assert float(ev.max() / ev.min()) < 1.1  # the input variance is isotropic: PCA has nothing to go on
    m = LIB(n_samples=50_000)
    dec = m.decompose(t.target(), Budget(), seed=0)
    for n, b in m.last_fit.bases.items():  # sparse inputs (p = 0.25) leave some sampling noise between blocks
        purity = block_purity(b.read, k)
        assert float(purity.min()) > 0.8 and float(purity.median()) > 0.99, f"node {n}"
    # read-side PCA at the isotropic input layer mixes the blocks
    pca_in = pca_basis(m.last_fit.graph.nodes[0])
    assert float(block_purity(pca_in.read, k).min()) < 0.8
    # grouping: exactly the k blocks, each group inside one block's support
    assert m.last_fit.bases and dec.groups is not None
    feature_groups = [g for g in dec.groups if all(dec.record.extra["kinds"][i] == "feature" for i in g)]
    assert len(feature_groups) == k
    masks = [mech.support for mech in t.ground_truth.mechanisms]
    for g in feature_groups:
        summed = {n: sum(dec.dense(i)[n] for i in g if n in dec.components[i]) for n in ("W1", "W2")}
        inside = [
            sum(float(summed[n][mk[n]].pow(2).sum()) for n in summed if isinstance(summed[n], Tensor)) for mk in masks
        ]
        total = sum(float(v.pow(2).sum()) for v in summed.values() if isinstance(v, Tensor))
        assert max(inside) > 0.98 * total
    # its paper's grouping is LIB's own level; its centred activations fire on nearly every input, so the
    # engine's co-activation grouping cannot tell the blocks apart (docs/metrics.md, "Grouping levels")
    s = score(t, dec, ["hungarian_own", "hungarian"])
    assert s["hungarian_own"] > 0.95 and s["hungarian"] < s["hungarian_own"]


def test_dense_block_chain_features_are_block_pure():
    """The reference's own check (docs/reference/lib_pca.md 5.6): a block-diagonal ReLU chain (two blocks of 4) with
    dense N(0, 1) inputs; LIB's read vectors stay in their block, PCA's at the isotropic input do not."""
    model = Chain([8, 8, 8, 8, 8], relu=True, seed=7)
    with torch.no_grad():
        for n in model.names:
            W = getattr(model, n)
            W[:4, 4:] = 0.0
            W[4:, :4] = 0.0
    target = chain_target([8, 8, 8, 8, 8], relu=True, seed=7)
    target.model.load_state_dict(model.state_dict())
    m = LIB(n_samples=20_000)
    dec = m.decompose(target, Budget(), seed=0)
    for n, b in m.last_fit.bases.items():
        assert float(block_purity(b.read, 2).min()) > 0.95, f"node {n}"
    assert float(block_purity(pca_basis(m.last_fit.graph.nodes[0]).read, 2).min()) < 0.8
    assert len([g for g in dec.groups if len(g) > 1]) >= 2


def test_pca_read_side_mixes_blocks_where_lib_does_not(toy):
    """The same read-side construction with PCA's basis: its block-model groups do not exist, and its
    per-feature components leak across blocks at the isotropic input layer."""
    t = toy("block_mlp")
    dec = PCA(side="read", n_samples=50_000).decompose(t.target(), Budget(), seed=0)
    masks = [mech.support["W1"] for mech in t.ground_truth.mechanisms]
    purities = []
    for i in range(len(dec)):
        comp = dec.dense(i).get("W1")
        if comp is None:
            continue
        total = float(comp.pow(2).sum())
        purities.append(max(float(comp[mk].pow(2).sum()) for mk in masks) / total)
    assert min(purities) < 0.8


def test_tms_rank_cap_is_a_result_not_a_crash(toy):
    t = toy("tms_5-2")
    m = LIB()
    dec = m.decompose(t.target(), Budget(), seed=0)
    dec.validate(t.param_shapes())
    rank = int(torch.linalg.matrix_rank(t.model.W.detach()))
    assert rank == 2
    assert all(b.rank <= rank for b in m.last_fit.bases.values())  # the input layer keeps 2 of 5 directions
    assert dec.record.extra["kinds"].count("feature") <= 2 * rank
    flat = dec.flat(t.spec.decomposed, t.param_shapes())
    gt = torch.stack([mech.basis(t.spec.decomposed, t.param_shapes())[0] for mech in t.ground_truth.mechanisms])
    cos = (gt @ flat.T).abs() / flat.norm(dim=1).clamp_min(1e-300)
    assert int((cos.max(1).values > 0.9).sum()) <= rank
    s = score(t, dec, ["hungarian", "mmcs"])
    assert s["hungarian"] < 0.5


def test_cluster_granularity_sums_groups(toy):
    t = toy("block_mlp")
    dec = LIB(granularity="cluster").decompose(t.target(), Budget(), seed=0)
    assert dec.groups is None
    params = t.target().params()
    total = component_sum(dec, params)
    for n, p in params.items():
        assert torch.allclose(total[n], p.double(), atol=1e-5)
    a = dec.attributions(t.sample(32, torch.Generator().manual_seed(1)))
    assert a.shape == (32, len(dec))


def test_attributions_activation_and_gradient(toy):
    t = toy("tms_5-2")
    x = t.sample(64, torch.Generator().manual_seed(5))
    for kind in ("activation", "gradient"):
        dec = LIB(attribution=kind).decompose(t.target(), Budget(), seed=0)
        a = dec.attributions(x)
        assert a.shape == (64, len(dec)) and bool(torch.isfinite(a).all()) and bool((a >= 0).all())


def test_gradient_attribution_matches_closed_form_on_a_linear_net():
    target = chain_target([4, 3, 2], relu=False)
    W1, W2 = target.params()["W1"], target.params()["W2"]
    P = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    dec = Decomposition([{"W1": P}, {"W2": W2.clone()}])
    x = target.sample(16, torch.Generator().manual_seed(1))
    a = gradient_attributions(target.model, dec, x, target.decomposed)
    want0 = (x @ P.T @ W2.T).pow(2).mean(1).sqrt()
    want1 = (x @ W1.T @ W2.T).pow(2).mean(1).sqrt()
    assert torch.allclose(a, torch.stack([want0, want1], 1), rtol=1e-5, atol=1e-6)


def test_bad_input_gets_a_clear_error(toy):
    t = toy("tms_5-2")
    with pytest.raises(ValueError, match="granularity"):
        LIB(granularity="layer").decompose(t.target(), Budget(), seed=0)
    with pytest.raises(ValueError, match="no hyperparameter"):
        LIB(nonsense=1)
    target = chain_target([3, 2], relu=False)
    bad = Target(
        target.spec,
        target.model,
        target.sample,
        target.loss,
        lambda x: [LinearSite("W1", torch.full_like(x, float("nan")))],
    )
    with pytest.raises(ValueError, match="NaN"):
        LIB(n_samples=100).decompose(bad, Budget(), seed=0)
    wrong = Target(target.spec, target.model, target.sample, target.loss, lambda x: [LinearSite("W9", x)])
    with pytest.raises(ValueError, match="not decomposed"):
        LIB(n_samples=100).decompose(wrong, Budget(), seed=0)
    with pytest.raises(ValueError, match="no linear sites"):
        build_graph([], {}, None)


def test_fit_lib_output_section_uses_the_final_relu(toy):
    t = toy("tms_5-2")
    x = t.sample(2000, torch.Generator().manual_seed(0))
    with torch.no_grad():
        graph = build_graph(t.target().sites(x), t.target().params(), t.model(x))
    assert [r.out_kind for r in graph.readers] == ["identity", "output (relu)"]
    bases = fit_lib(graph)
    assert [bases[n].rank for n in sorted(bases)] == [2, 2]


def test_a_parameter_no_site_reads_stays_one_whole_component():
    target = chain_target([4, 3, 2], relu=True)
    partial = Target(
        target.spec, target.model, target.sample, target.loss, lambda x: target.sites(x)[:1]
    )  # only W1's use is exposed
    for method in (LIB(n_samples=2000), PCA(n_samples=2000)):
        dec = method.decompose(partial, Budget(), seed=0)
        kinds = dec.record.extra["kinds"]
        assert kinds.count("unread") == 1
        unread = dec.dense(kinds.index("unread"))
        assert set(unread) == {"W2"} and torch.equal(unread["W2"], target.params()["W2"])
        total = component_sum(dec, target.params())
        for n, p in target.params().items():
            assert torch.allclose(total[n], p.double(), atol=1e-5)
        a = dec.attributions(target.sample(8, torch.Generator().manual_seed(0)))
        assert torch.equal(a[:, kinds.index("unread")], torch.ones(8))


def test_output_edges_fast_path_equals_the_general_formula():
    target = chain_target([5, 6, 4], relu=True, seed=2)
    m = LIB(n_samples=3000, n_edge_samples=3000)
    m.decompose(target, Budget(), seed=0)
    k, _, E = next(e for e in m.last_fit.edges if e[1] is None)
    r = m.last_fit.graph.readers[k]
    f = m.last_fit.graph.nodes[r.node][:3000]
    general = section_edges(
        r, m.last_fit.bases[r.node], f, torch.eye(4, dtype=torch.float64), r.out_derivative[:3000], chunk=7
    )
    assert torch.allclose(E, general, rtol=1e-10, atol=1e-14)


def test_gradient_attribution_matches_finite_differences(toy):
    import copy

    from torch.func import functional_call

    t = toy("tms_5-2")
    dec = LIB(group=False).decompose(t.target(), Budget(), seed=0)
    model = copy.deepcopy(t.model).double()
    x = t.sample(256, torch.Generator().manual_seed(2)).double()
    with torch.no_grad():  # the scorer calls attributions under no_grad
        a = gradient_attributions(model, dec, x, t.spec.decomposed)
        params = {n: p.detach() for n, p in model.named_parameters()}
        eps = 1e-6
        for i in range(len(dec)):
            P = dec.dense(i)["W"].double()
            up = functional_call(model, {**params, "W": params["W"] + eps * P}, (x,))
            down = functional_call(model, {**params, "W": params["W"] - eps * P}, (x,))
            want = ((up - down) / (2 * eps)).pow(2).mean(1).sqrt()
            assert torch.allclose(a[:, i].double(), want, rtol=1e-4, atol=1e-6)
