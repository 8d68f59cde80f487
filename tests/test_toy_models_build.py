"""Building toy models: determinism, the SHA-256-checked weight cache, and the health retry (issue 3)."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from benchmark.cache import CacheWarning, WeightCache
from benchmark.toy import load_toy
from toy_models.circuits import CircuitSuperposition
from toy_models.resid_mlp import ResidMLP
from toy_models.shared_neurons import SharedNeurons
from toy_models.square_mlp import SquareMLP
from toy_models.tms import TMS, TMSId


@pytest.mark.parametrize(
    "make",
    [
        lambda: TMS(steps=100),
        lambda: TMSId(steps=100),
        lambda: CircuitSuperposition(n_data=512, epochs=2),
        lambda: CircuitSuperposition(30, 10, group=5, n_data=512, epochs=2),
        lambda: ResidMLP(2, steps=5),
        lambda: SquareMLP(n_data=512, epochs=2),
        lambda: SharedNeurons(),
    ],
    ids=["tms", "tms-id", "tmcs", "higher-rank", "resid2", "square", "shared"],
)
def test_training_is_deterministic(make):
    a, b = make(), make()
    na, nb = a.make_model(), b.make_model()
    a.fit(na, 3)
    b.fit(nb, 3)
    for (k, va), (_, vb) in zip(na.state_dict().items(), nb.state_dict().items(), strict=True):
        assert torch.equal(va, vb), k
    nc = make().make_model()
    make().fit(nc, 4)
    assert any(
        not torch.equal(va, vc) for va, vc in zip(na.state_dict().values(), nc.state_dict().values(), strict=True)
    ), "another seed, other weights"


def test_cache_round_trip_and_fast_load(tmp_path):
    cache = WeightCache(tmp_path)
    first = load_toy("tmcs_10-5-10", cache=cache, epochs=1, n_data=512)
    assert not first.build_info.from_cache
    again = load_toy("tmcs_10-5-10", cache=cache, epochs=1, n_data=512)
    assert again.build_info.from_cache
    assert again.build_info.weights_sha256 == first.build_info.weights_sha256
    assert again.build_info.build_seconds < 1.0
    assert torch.equal(again.model.A, first.model.A)


def _corrupt_bytes(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "stale weights hash", "delete metadata"])
def test_corrupt_or_stale_cache_is_reported_and_rebuilt(tmp_path, damage):
    cache = WeightCache(tmp_path)
    good = load_toy("tmcs_10-5-10", cache=cache, epochs=1, n_data=512)
    pt, meta = cache.paths(good.cache_key)
    if damage == "flip a byte":
        _corrupt_bytes(pt)
    elif damage == "truncate":
        pt.write_bytes(pt.read_bytes()[:50])
    elif damage == "stale weights hash":
        m = json.loads(meta.read_text())
        m["weights_sha256"] = "0" * 64
        meta.write_text(json.dumps(m))
    else:
        meta.unlink()
    with pytest.warns(CacheWarning, match="invalid"):
        rebuilt = load_toy("tmcs_10-5-10", cache=cache, epochs=1, n_data=512)
    assert not rebuilt.build_info.from_cache
    assert rebuilt.build_info.weights_sha256 == good.build_info.weights_sha256, "rebuilt deterministically"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_toy("tmcs_10-5-10", cache=cache, epochs=1, n_data=512).build_info.from_cache, "and cached again"


class _FirstSeedsSick(SharedNeurons):
    """Rejects seeds below 2, to exercise the retry."""

    def health(self, model: nn.Module, info: dict[str, Any]) -> str | None:
        return "sick on purpose" if info["seed"] < 2 else None

    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        return dict(super().fit(model, seed), seed=seed)


def test_unhealthy_seed_moves_to_the_next_and_is_recorded(tmp_path):
    toy = _FirstSeedsSick().build(WeightCache(tmp_path))
    assert toy.build_info.train_seed == 2
    assert toy.build_info.extra["rejected_seeds"] == ["seed 0: sick on purpose", "seed 1: sick on purpose"]
    again = _FirstSeedsSick().build(WeightCache(tmp_path))
    assert again.build_info.from_cache and again.build_info.train_seed == 2


def test_tms_health_detects_a_lost_feature():
    toy = TMS()
    net = toy.make_model()
    with torch.no_grad():
        net.W.copy_(torch.randn(2, 5, generator=torch.Generator().manual_seed(0)))
        net.W[:, 3] *= 0.01
    assert "feature 3 lost" in toy.health(net, {})


def test_resid_health_detects_an_ignored_feature():
    toy = ResidMLP(1, n_features=4, d_mlp=2, d_embed=8, steps=1)
    net = toy.make_model()
    with torch.no_grad():
        net.W_E.copy_(torch.eye(4, 8))
        net.layers[0].W_in.copy_(torch.tensor([[1.0, 1, 0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0]]))
        net.layers[0].W_out.copy_(torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 0], *([[0, 0]] * 4)]))
    assert "feature 3 ignored" in toy.health(net, {})


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="groups"):
        CircuitSuperposition(10, 5, group=3).sample(4, torch.Generator())
    with pytest.raises(ValueError, match="layers"):
        ResidMLP(5)


def test_list_shows_the_ladder(tmp_path):
    from benchmark.commands.list import toy_rows
    from benchmark.registry import TOY_MODELS

    cache = WeightCache(tmp_path)
    SharedNeurons().build(cache)
    rows = toy_rows(cache)
    assert sorted(r[0] for r in rows) == sorted(TOY_MODELS.names())
    order = {"headline": 0, "reproduction": 1, "diagnostic": 2}
    assert [(order[r[2]], r[1]) for r in rows] == sorted((order[r[2]], r[1]) for r in rows), "by track, then tier"
    by_name = {r[0]: r for r in rows}
    assert by_name["shared_neurons"][6].startswith("hand-built") and by_name["tms_5-2"][6] == "shipped (seed 0)"
    assert by_name["tmcs_10-5-10-rot"][6] == "not built"  # its rotation is made from the shipped weights on a build
    assert by_name["resid_mlp1"][4] == "contested" and by_name["resid_mlp1"][5] == "100,000 / 100,000"
    assert by_name["tms_5-2"][2] == "reproduction" and by_name["block_mlp-rot"][2] == "diagnostic"
    assert by_name["tms_5-2"][3] == "1" and by_name["shared_circuits-rot"][3].startswith("3 (")  # instances
    assert by_name["shared_circuits-rot"][2] == "headline"


def test_other_hyperparameters_get_their_own_cache_key():
    from benchmark.registry import TOY_MODELS

    assert TMS().cache_key == "tms_5-2-v1-seed0" == TOY_MODELS.get("tms_5-2")().cache_key
    assert TMS(steps=100).cache_key.startswith("tms_5-2-v1-seed0-")
    assert TMS(steps=100).cache_key != TMS(steps=200).cache_key
    assert CircuitSuperposition(epochs=1).cache_key != CircuitSuperposition().cache_key
    assert TMSId(40, 10, batch_size=8192).cache_key == "tms_40-10-id-v1-seed0"


def _shipped_at(monkeypatch, toy, path):
    monkeypatch.setattr(type(toy), "shipped_weights_path", lambda self: path)


def test_shipped_weights_are_loaded_before_the_cache_and_training_is_on_request(tmp_path, monkeypatch):
    """A toy model that ships weights builds from them on every machine (the cache is not read); with
    ``shipped=False`` it is trained (or read from the cache) as any other."""
    from benchmark.cache import weights_sha256, write_shipped

    cache = WeightCache(tmp_path / "cache")
    trained = load_toy("tmcs_10-5-10", cache=cache, epochs=1, n_data=512)
    other = {k: v + 0.5 for k, v in trained.model.state_dict().items()}  # weights another CPU might have trained
    toy = CircuitSuperposition(epochs=1, n_data=512)
    path = tmp_path / "weights" / f"{toy.cache_key}.safetensors"
    path.parent.mkdir()
    sha = write_shipped(path, other, 3, {"accuracy": 1.0})
    assert sha == weights_sha256(other) != trained.build_info.weights_sha256
    _shipped_at(monkeypatch, toy, path)
    shipped = toy.build(cache)
    assert shipped.build_info.weights_sha256 == sha and shipped.build_info.train_seed == 3
    assert torch.equal(shipped.model.A, other["A"]) and shipped.build_info.extra == {"accuracy": 1.0}
    meta = {"weights_sha256": sha, "train_seed": 3, "extra": {"accuracy": 1.0}, "shipped": True}
    assert toy.stored_meta(cache) == meta
    own = CircuitSuperposition(epochs=1, n_data=512).build(cache, shipped=False)
    assert own.build_info.weights_sha256 == trained.build_info.weights_sha256


@pytest.mark.parametrize("damage", ["flip a byte", "truncate"])
def test_a_damaged_shipped_file_is_an_error_naming_it(tmp_path, monkeypatch, damage):
    """Never a silent retrain: weights trained here could differ from the shipped ones the results record."""
    from benchmark.cache import ShippedWeightsError, write_shipped

    toy = CircuitSuperposition(epochs=1, n_data=512)
    path = tmp_path / "shipped.safetensors"
    write_shipped(path, {n: torch.ones(p.shape) for n, p in toy.make_model().state_dict().items()}, 0, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])
    _shipped_at(monkeypatch, toy, path)
    with pytest.raises(ShippedWeightsError, match="shipped.safetensors.*reinstall pdbench"):
        toy.build(WeightCache(tmp_path))
    assert not any(tmp_path.glob("*.pt")), "nothing trained or cached in its place"


def test_a_toy_model_defined_without_a_file_ships_nothing_and_trains(tmp_path):
    """A class from a notebook or a REPL has no module file: no shipped weights to look for, so it is trained."""
    notebook = type("NotebookCircuits", (CircuitSuperposition,), {"__module__": "pdbench_notebook_cell"})
    toy = notebook(epochs=1, n_data=512)
    assert toy.shipped_weights_path() is None and toy.stored_meta(WeightCache(tmp_path)) is None
    assert not toy.build(WeightCache(tmp_path)).build_info.from_cache


def test_every_shipped_file_belongs_to_a_registered_toy_model_and_is_packaged(tmp_path):
    from pathlib import Path

    import toy_models
    from benchmark.cache import read_shipped
    from benchmark.executors import toy_is_cached
    from benchmark.registry import TOY_MODELS

    shipped = sorted((Path(toy_models.__file__).parent / "weights").glob("*.safetensors"))
    keys = {}
    for name in _public_instances():
        t = TOY_MODELS.get(name)()
        keys[t.shipped_weights_path()] = t
    assert shipped, "induction_trained ships its weights"
    for path in shipped:
        assert path in keys, f"{path.name} is no registered toy model's weights"
        state, meta = read_shipped(path)
        assert set(state) == set(keys[path].make_model().state_dict())
        assert toy_is_cached(keys[path].spec.name, str(tmp_path)), "its cells need not wait for a build"
    pyproject = (Path(toy_models.__file__).parent.parent / "pyproject.toml").read_text()
    assert 'toy_models = ["weights/*.safetensors"]' in pyproject


def _public_instances() -> list[str]:
    """Every registered toy model, with the public instances the headline suite scores (``name@1`` ...)."""
    from benchmark.registry import TOY_MODELS
    from benchmark.suites import SUITES

    return [f"{n}@{i}" if i else n for n in TOY_MODELS.names() for i in range(SUITES["headline"].instances)]


def _shipped_toys() -> list[str]:
    from benchmark.registry import TOY_MODELS

    paths = {n: TOY_MODELS.get(n)().shipped_weights_path() for n in _public_instances()}
    return [n for n, path in paths.items() if path is not None and path.exists()]


@pytest.mark.slow
@pytest.mark.parametrize("name", _shipped_toys())
def test_training_a_shipped_toy_model_here_gives_a_healthy_one(tmp_path, name):
    """The shipped weights came from one CPU; trained here from its seed (``shipped=False``), the toy must still
    pass its health check (``build`` raises otherwise). Whether the bits match depends on the CPU (printed)."""
    from benchmark.registry import TOY_MODELS

    shipped = TOY_MODELS.get(name)().build(WeightCache(tmp_path / "a"))
    here = TOY_MODELS.get(name)().build(WeightCache(tmp_path / "b"), shipped=False)
    assert not here.build_info.from_cache and here.build_info.extra.get("rejected_seeds") == []
    same = here.build_info.weights_sha256 == shipped.build_info.weights_sha256
    print(f"{name}: trained here {'the same bits as' if same else 'other bits than'} the shipped weights")
