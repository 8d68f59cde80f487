"""Inputs are validated at every boundary: CLI arguments, plugin files, entry points; each bad input gets a
clear error naming what is wrong, never a run with silently wrong settings."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch

from benchmark.cli import main
from benchmark.executors import Limits, make_executor
from benchmark.registry import Registry, RegistryError
from benchmark.results import Cell


def _run(args: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main(["run", "--no-leaderboard", *args])
    except SystemExit as exc:  # argparse refuses the value
        rc = int(exc.code or 0)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--seeds", "-1"], "seeds must be one or more integers >= 0"),
        (["--seeds", "a,b"], "seeds must be comma-separated integers"),
        (["--jobs", "0"], "must be an integer >= 1"),
        (["--time-limit", "soon"], "must be a positive number or 'none'"),
        (["--memory-limit-mb", "-5"], "must be a positive number or 'none'"),
        (["--steps", "0"], "must be an integer >= 1"),
        (["--executor", "slurm"], "invalid choice: 'slurm'"),
        (["--suite", "huge"], "invalid choice: 'huge'"),
        (["--methods", "pcaa"], "unknown method 'pcaa'"),
        (["--toys", "tms_5-3"], "unknown toy model 'tms_5-3'"),
        (["--device", "gpu0"], "is not a torch device"),
        (["--methods", "", "--toys", "tms_5-2"], "the selection has no cells"),
    ],
)
def test_bad_cli_arguments_are_refused(tmp_path: Path, capsys, args: list[str], fragment: str) -> None:
    rc, err = _run([*args, "--results", str(tmp_path)], capsys)
    assert rc == 2 and fragment in err
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused(tmp_path: Path, capsys) -> None:
    rc, err = _run(["--device", "cuda", "--results", str(tmp_path)], capsys)
    assert rc == 2 and "CUDA is not available" in err


@pytest.mark.parametrize(
    "source, fragment",
    [
        (None, "does not exist"),
        ("raise ImportError('needs a package this machine lacks')", "failed to import: ImportError: needs a package"),
        ("def broken(:\n", "failed to import: SyntaxError"),
    ],
)
def test_bad_plugin_files_are_refused(tmp_path: Path, capsys, source: str | None, fragment: str) -> None:
    plugin = tmp_path / "plugin.py"
    if source is not None:
        plugin.write_text(source)
    rc = main(["--plugin", str(plugin), "run", "--no-leaderboard", "--results", str(tmp_path / "r")])
    assert rc == 2 and fragment in capsys.readouterr().err


def test_a_plugin_that_is_not_python_is_refused(tmp_path: Path, capsys) -> None:
    plugin = tmp_path / "plugin.txt"
    plugin.write_text("x = 1\n")
    assert main(["--plugin", str(plugin), "list"]) == 2
    assert "is not a .py file" in capsys.readouterr().err


def test_a_broken_entry_point_is_a_clear_error(monkeypatch) -> None:
    ep = importlib.metadata.EntryPoint("ghost", "no_such_package.adapters:Ghost", "pdbench.test_group")

    def fake(group: str | None = None, **_):
        return [ep] if group == "pdbench.test_group" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    reg: Registry[type] = Registry("method", None, "pdbench.test_group")
    assert "ghost" in reg.names()
    with pytest.raises(RegistryError, match="cannot import module 'no_such_package.adapters'"):
        reg.get("ghost")


def test_a_method_that_is_not_a_method_class_is_an_error_row(tmp_path: Path) -> None:
    from benchmark.runner import run_cell

    row = run_cell(Cell("tms_5-2", "collections:OrderedDict", 0))
    assert row["status"] == "error" and row["error"]["stage"] == "loading the method"
    assert "not a subclass of benchmark.method.Method" in row["error"]["message"]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"time_s": 0}, "time_s must be a positive number"),
        ({"memory_mb": -1}, "memory_mb must be a positive number"),
        ({"time_s": "10"}, "time_s must be a positive number"),
    ],
)
def test_bad_limits_are_refused(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Limits(**kwargs)


def test_an_unknown_executor_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown executor 'dask'; known executors: local, serial, ray"):
        make_executor("dask")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"toy": "", "method": "pca", "seed": 0}, "cell toy '' is neither a valid name"),
        ({"toy": "..", "method": "pca", "seed": 0}, "neither a valid name"),
        ({"toy": "tms_5-2", "method": "../../x", "seed": 0}, "neither a valid name"),
        ({"toy": "tms 5-2", "method": "pca", "seed": 0}, "neither a valid name"),
        ({"toy": "tms_5-2", "method": "pca", "seed": 1.5}, "seed must be an integer"),
        ({"toy": "tms_5-2", "method": "pca", "seed": -2}, "seed must be in 0"),
    ],
)
def test_bad_cells_are_refused(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Cell(**kwargs)
