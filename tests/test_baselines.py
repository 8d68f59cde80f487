"""Reference rows: pca (write and read side), neuron, whole, random."""

from __future__ import annotations

import pytest
import torch

from benchmark.method import Budget
from benchmark.registry import METHODS
from benchmark.results import Cell
from benchmark.runner import run_cell
from benchmark.scoring import score
from methods.neuron import Neuron
from methods.pca import PCA
from methods.random_components import RandomComponents
from methods.whole import Whole

torch.set_num_threads(1)


def summed(dec, names):
    out = {}
    for i in range(len(dec)):
        for n, v in dec.dense(i).items():
            out[n] = out.get(n, 0) + v.double()
    return {n: out[n] for n in names}


@pytest.mark.parametrize("name", ["pca", "neuron", "whole", "random", "lib"])
def test_registered_as_rows(name):
    cls = METHODS.get(name)
    assert cls.name == name
    assert cls.reference_row == (name != "lib")


@pytest.mark.parametrize("kw", [{}, {"side": "read"}], ids=["write", "read"])
@pytest.mark.parametrize("toy_name", ["tms_5-2", "block_mlp"])
def test_pca_is_faithful(toy, toy_name, kw):
    t = toy(toy_name)
    dec = PCA(**kw).decompose(t.target(), Budget(), seed=0)
    dec.validate(t.param_shapes())
    assert dec.faithful
    for n, v in summed(dec, t.spec.decomposed).items():
        w = dict(t.model.named_parameters())[n].double()
        assert torch.allclose(v, w, atol=1e-5 * float(w.abs().max()))


def test_pca_write_side_rank_cap_on_tms(toy):
    t = toy("tms_5-2")
    dec = PCA().decompose(t.target(), Budget(), seed=0)
    rank = int(torch.linalg.matrix_rank(t.model.W.detach()))
    assert dec.record.extra["features_per_site"] == [rank, rank]
    assert dec.record.extra["kinds"].count("feature") == 2 * rank  # 4 components for 5 mechanisms
    s = score(t, dec, ["hungarian"])
    assert s["hungarian"] < 0.8  # a rank-2 weight cannot give five rank-1 mechanisms their own piece
    flat = dec.flat(t.spec.decomposed, t.param_shapes())
    gt = torch.stack([m.basis(t.spec.decomposed, t.param_shapes())[0] for m in t.ground_truth.mechanisms])
    cos = (gt @ flat.T).abs() / flat.norm(dim=1)
    assert int((cos.max(1).values > 0.9).sum()) <= rank


def test_pca_write_components_are_data_weighted_svd(toy):
    """Write side, first site of TMS (z = W x): P_j = u_j u_j^T W with u_j orthonormal, by variance."""
    t = toy("tms_5-2")
    dec = PCA().decompose(t.target(), Budget(), seed=0)
    W = t.model.W.detach().double()
    x = t.sample(20_000, torch.Generator().manual_seed(0)).double()
    z = x @ W.T
    evals, evecs = torch.linalg.eigh(torch.cov(z.T, correction=0))
    for j, i in enumerate((1, 0)):  # descending variance
        u = evecs[:, i]
        want = 0.5 * torch.outer(u, u) @ W  # W is used at two sites (tied): each site's share is 1/2
        got = dec.dense(j)["W"].double()
        assert torch.allclose(got, want, atol=1e-5)


def test_pca_attributions_are_mean_ablation(toy):
    t = toy("tms_5-2")
    dec = PCA().decompose(t.target(), Budget(), seed=0)
    x = t.sample(20_000, torch.Generator().manual_seed(0))  # the fitting sample: its mean has zero coordinates
    a = dec.attributions(x.mean(0, keepdim=True))
    first_site = [i for i, _ in enumerate(dec.record.extra["kinds"]) if i < 2]
    assert torch.allclose(a[0, first_site], torch.zeros(len(first_site)), atol=1e-5)
    b = dec.attributions(x[:100])
    assert b.shape == (100, len(dec)) and bool((b >= 0).all())


def test_pca_read_side_basis_is_orthonormal_by_variance(toy):
    t = toy("tms_5-2")
    dec = PCA(side="read").decompose(t.target(), Budget(), seed=0)
    W = t.model.W.detach().double()
    kinds = dec.record.extra["kinds"]
    assert dec.record.extra["features_per_site"] == [5, 2]  # read side keeps all 5 input directions
    reads = []
    for i in range(5):
        assert kinds[i] == "feature"
        P = dec.dense(i)["W"].double() * 2  # undo the tied-weight share
        _, sv, vh = torch.linalg.svd(P)
        assert float(sv[1]) < 1e-6 * float(sv[0])  # rank 1
        u = vh[0]
        assert torch.allclose(P, torch.outer(W @ u, u), atol=1e-5)  # P = W u u^T
        reads.append(u)
    U = torch.stack(reads, 1)
    assert torch.allclose(U.T @ U, torch.eye(5, dtype=torch.float64), atol=1e-5)
    x = t.sample(20_000, torch.Generator().manual_seed(0)).double()
    var = ((x - x.mean(0)) @ U).pow(2).mean(0)
    assert bool((var[:-1] >= var[1:] - 1e-9).all())


def test_neuron_recovers_neuron_aligned_mechanisms(toy):
    t = toy("tms_5-2")
    dec = Neuron().decompose(t.target(), Budget(), seed=0)
    W = t.model.W.detach()
    for c in range(5):  # component c of the first site is W's column c (half of it: tied weight)
        want = torch.zeros_like(W)
        want[:, c] = W[:, c] / 2
        assert torch.allclose(dec.dense(c)["W"], want)
    s = score(t, dec, ["mmcs"])
    assert s["mmcs"] == pytest.approx(1.0, abs=1e-6)
    x = torch.zeros(3, 5)
    x[1, 2] = 0.7
    a = dec.attributions(x)
    assert a[1, 2] == pytest.approx(0.7) and float(a[0, :5].abs().sum()) == 0.0


def test_whole_is_one_faithful_component_with_gradient_attribution(toy):
    t = toy("block_mlp")
    dec = Whole().decompose(t.target(), Budget(), seed=0)
    assert len(dec) == 1 and dec.faithful
    for n, v in summed(dec, t.spec.decomposed).items():
        assert torch.equal(v.float(), dict(t.model.named_parameters())[n].detach())
    x = t.sample(8, torch.Generator().manual_seed(0))
    x[0] = 0.0
    a = dec.attributions(x)
    # y is homogeneous of degree 2 in (W1, W2): d/dt y(W + t W) at t = 0 is 2 y
    want = (2 * t.model(x)).pow(2).mean(1).sqrt()
    assert torch.allclose(a[:, 0], want, rtol=1e-5, atol=1e-7)
    assert float(a[0, 0]) == 0.0


def test_random_is_deterministic_and_checked(toy):
    t = toy("tms_5-2")
    a = RandomComponents().decompose(t.target(), Budget(), seed=1)
    b = RandomComponents().decompose(t.target(), Budget(), seed=1)
    c = RandomComponents().decompose(t.target(), Budget(), seed=2)
    names, shapes = t.spec.decomposed, t.param_shapes()
    assert torch.equal(a.flat(names, shapes), b.flat(names, shapes))
    assert not torch.equal(a.flat(names, shapes), c.flat(names, shapes))
    assert a.attributions(t.sample(16, torch.Generator().manual_seed(0))).shape == (16, len(a))
    with pytest.raises(ValueError, match="per_parameter"):
        RandomComponents(per_parameter=0).decompose(t.target(), Budget(), seed=0)


def test_bad_options_get_clear_errors(toy):
    t = toy("tms_5-2")
    with pytest.raises(ValueError, match="side"):
        PCA(side="both").decompose(t.target(), Budget(), seed=0)
    with pytest.raises(ValueError, match="attribution"):
        Neuron(attribution="ablation").decompose(t.target(), Budget(), seed=0)
    with pytest.raises(ValueError, match="n_samples"):
        PCA(n_samples=1).decompose(t.target(), Budget(), seed=0)


@pytest.mark.parametrize("method", ["lib", "pca"])
def test_tms_cells_are_results_not_crashes(method):
    res = run_cell(Cell("tms_5-2", method, 0))
    assert res["status"] == "ok", res["error"]
    assert 0.0 <= res["metrics"]["hungarian"] <= 1.0
    assert res["metrics"]["hungarian"] < 0.8  # the rank cap, shown as a score


def test_neuron_wide_inputs_use_the_narrow_side():
    from tests.test_lib import chain_target

    target = chain_target([300, 4, 2], relu=True)
    dec = Neuron().decompose(target, Budget(), seed=0)
    assert dec.record.extra["side_per_site"] == ["write", "read"]
    assert len(dec) == 4 + 4  # four rows of W1, four columns of W2
    W1 = target.params()["W1"]
    want = torch.zeros_like(W1)
    want[0] = W1[0]
    assert torch.allclose(dec.dense(0)["W1"], want)
    assert Neuron(max_per_site=None).decompose(target, Budget(), seed=0).record.extra["side_per_site"] == [
        "read",
        "read",
    ]
