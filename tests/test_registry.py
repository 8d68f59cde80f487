"""The registry contract: decorators, lazy references, entry points, plugins, and clear errors."""

from __future__ import annotations

import importlib.metadata

import pytest

from benchmark.registry import METHODS, TOY_MODELS, Registry, RegistryError, load_plugin


def test_decorator_and_lookup() -> None:
    reg: Registry[type] = Registry("widget")

    @reg.register("a")
    class A:
        pass

    assert reg.get("a") is A
    assert "a" in reg and reg.names() == ["a"]
    assert reg.origin("a").endswith("A")


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(RegistryError) as err:
        METHODS.get("pcaa")
    msg = str(err.value)
    assert "unknown method 'pcaa'" in msg
    for name in ("oracle", "pca", "random"):
        assert name in msg
    assert "Did you mean pca" in msg


def test_duplicate_name_is_refused() -> None:
    reg: Registry[int] = Registry("number")
    reg.register("one", 1)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("one", 2)
    reg.register("one", 2, replace=True)
    assert reg.get("one") == 2


def test_lazy_reference_is_imported_on_first_use() -> None:
    reg: Registry[type] = Registry("thing")
    reg.register("od", lazy="collections:OrderedDict")
    import collections

    assert reg.get("od") is collections.OrderedDict
    assert reg.get("collections:Counter") is collections.Counter  # a module:object string works directly


@pytest.mark.parametrize(
    "ref, match", [("nosuchmodule_xyz:Thing", "cannot import"), ("collections:NoSuchThing", "has no attribute")]
)
def test_broken_lazy_reference_gives_a_clear_error(ref: str, match: str) -> None:
    reg: Registry[type] = Registry("thing")
    reg.register("x", lazy=ref)
    with pytest.raises(RegistryError, match=match):
        reg.get("x")


def test_entry_points_are_discovered(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = importlib.metadata.EntryPoint(name="ep_method", value="collections:OrderedDict", group="pdbench.test")
    real = importlib.metadata.entry_points

    def fake(**kw):
        return [ep] if kw.get("group") == "pdbench.test" else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    reg: Registry[type] = Registry("method", entry_point_group="pdbench.test")
    assert "ep_method" in reg.names()
    assert reg.origin("ep_method") == "entry point collections:OrderedDict"
    import collections

    assert reg.get("ep_method") is collections.OrderedDict


def test_builtins_are_discovered() -> None:
    assert {"oracle", "random", "pca"} <= set(METHODS.names())
    assert {"block_mlp", "tms_5-2"} <= set(TOY_MODELS.names())
    assert not METHODS.import_errors, METHODS.import_errors


def test_plugin_errors_are_clear(tmp_path) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        load_plugin(tmp_path / "missing.py")
    broken = tmp_path / "broken.py"
    broken.write_text("raise ImportError('boom')\n")
    with pytest.raises(RegistryError, match="failed to import: ImportError: boom"):
        load_plugin(broken)
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(RegistryError, match="not a .py file"):
        load_plugin(text)


def test_a_misspelt_toy_gets_a_suggestion():
    from benchmark.registry import TOY_MODELS, RegistryError

    for typo, expected in (("tms_5_2", "tms_5-2"), ("TMS-40-10", "tms_40-10"), ("blok_mlp", "block_mlp")):
        with pytest.raises(RegistryError, match=f"Did you mean {expected}"):
            TOY_MODELS.get(typo)
