"""`--hparams 'method.key=value,...'` on run and submit (blind-protocol issue): parsed, type-checked in one
place, recorded in each result, and never mixed with cells run without them."""

from __future__ import annotations

import argparse
import json

import pytest

from benchmark.cli import main
from benchmark.options import hparams_arg
from benchmark.registry import METHODS


def test_hparams_are_parsed_as_json_where_they_parse() -> None:
    got = hparams_arg("apd.C=8, spd.lr=0.01,pca.side=read,l3d.n_v=[1, 2],spd.C=null")
    assert got == {"apd": {"C": 8}, "spd": {"lr": 0.01, "C": None}, "pca": {"side": "read"}, "l3d": {"n_v": [1, 2]}}
    for bad in ("apd", "apd=3", ".C=3", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            hparams_arg(bad)


def test_unknown_keys_and_wrong_types_are_errors_in_one_place() -> None:
    pca = METHODS.get("pca")
    with pytest.raises(ValueError, match="no hyperparameter"):
        pca(no_such_key=1)
    with pytest.raises(TypeError, match="'n_samples' must be a int"):
        pca(n_samples=0.5)
    with pytest.raises(TypeError, match="'side' must be a str"):
        pca(side=3)
    assert pca(n_samples=100, rel_tol=1).overrides == {"n_samples": 100, "rel_tol": 1}  # an int for a float


def test_run_records_overrides_and_refuses_to_mix_them(tmp_path, capsys) -> None:
    results = tmp_path / "r"
    argv = ["run", "--toys", "tms_5-2", "--methods", "pca", "--seeds", "0", "--results", str(results)]
    assert main([*argv, "--executor", "serial", "--no-leaderboard", "--hparams", "pca.side=read"]) == 0
    stored = json.loads((results / "tms_5-2" / "pca" / "seed0.json").read_text())
    assert stored["method"]["overrides"] == {"side": "read"} and stored["method"]["hparams"]["side"] == "read"
    capsys.readouterr()
    assert main([*argv, "--executor", "serial", "--no-leaderboard"]) == 2  # the defaults into the same folder
    assert "never mixes them" in capsys.readouterr().err
    assert main([*argv, "--hparams", "pca.n_samples=0.5"]) == 2
    assert "must be a int" in capsys.readouterr().err
    assert main([*argv, "--hparams", "apd.C=3"]) == 2
    assert "does not include" in capsys.readouterr().err


def test_per_model_defaults_name_registered_toys() -> None:
    from benchmark.registry import TOY_MODELS

    for name in METHODS.names():
        cls = METHODS.builtin(name)
        if cls is None:
            continue
        stray = set(cls.per_model_defaults) - set(TOY_MODELS.names())
        assert not stray, f"{name}.per_model_defaults names no registered toy model: {sorted(stray)}"
        for toy, table in cls.per_model_defaults.items():
            unknown = set(table) - set(cls.defaults)
            assert not unknown, f"{name}.per_model_defaults[{toy!r}] sets unknown keys {sorted(unknown)}"


def test_blind_runs_every_method_without_its_per_toy_settings(tmp_path, capsys) -> None:
    """``--blind`` is the override ``tuned=false`` for every method in the run: recorded, and APD on TMS 5-2
    takes its blind rule (C = the largest side, 5) with the generic recipe's batch top-k, not the paper's."""
    results = tmp_path / "r"
    argv = ["run", "--toys", "tms_5-2", "--methods", "apd,pca", "--seeds", "0", "--results", str(results)]
    assert main([*argv, "--executor", "serial", "--no-leaderboard", "--steps", "2", "--blind"]) == 0
    apd = json.loads((results / "tms_5-2" / "apd" / "seed0.json").read_text())["method"]
    assert apd["overrides"] == {"tuned": False}
    assert apd["hparams"]["C"] == 5 and apd["hparams"]["topk"] == METHODS.builtin("apd").defaults["topk"]
    pca = json.loads((results / "tms_5-2" / "pca" / "seed0.json").read_text())["method"]
    assert pca["overrides"] == {"tuned": False}
    capsys.readouterr()
    assert main([*argv, "--executor", "serial", "--no-leaderboard", "--steps", "2"]) == 2  # tuned into a blind folder
    assert "never mixes them" in capsys.readouterr().err
