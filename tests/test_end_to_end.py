"""The walking skeleton end to end through the CLI: run, score, store, leaderboard, plugins, determinism."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from benchmark.cli import main
from benchmark.method import Budget
from benchmark.registry import METHODS
from benchmark.results import SCHEMA_VERSION
from benchmark.scoring import ComponentSpace

BASELINES = "oracle,random,pca"
TOYS = "block_mlp,tms_5-2"


def _results(root: Path) -> dict[tuple[str, str, int], dict]:
    out = {}
    for p in root.rglob("seed*.json"):
        r = json.loads(p.read_text())
        out[(r["cell"]["toy"], r["cell"]["method"], r["cell"]["seed"])] = r
    return out


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("results")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["run", "--toys", TOYS, "--methods", BASELINES, "--results", str(root)])
    assert rc == 0
    return root, buf.getvalue()


def test_oracle_is_perfect_and_random_far_below(quick_run) -> None:
    root, printed = quick_run
    res = _results(root)
    assert len(res) == 6 and all(r["status"] == "ok" for r in res.values())
    for toy in TOYS.split(","):
        oracle = res[(toy, "oracle", 0)]["metrics"]
        assert oracle["hungarian"] == pytest.approx(1.0, abs=1e-9)
        assert oracle["mmcs"] == pytest.approx(1.0, abs=1e-9)
        assert res[(toy, "random", 0)]["metrics"]["hungarian"] < 0.6
    assert "| oracle (ref)" in printed and "1.000" in printed


def test_results_record_what_is_needed_to_reproduce_them(quick_run) -> None:
    root, _ = quick_run
    r = _results(root)[("tms_5-2", "pca", 0)]
    assert r["schema_version"] == SCHEMA_VERSION
    assert len(r["toy"]["weights_sha256"]) == 64 and r["toy"]["train_seed"] >= 0
    assert r["method"]["version"] and "n_samples" in r["method"]["hparams"]
    assert (
        r["env"]["torch"]
        and r["env"]["cpu_capability"]
        and r["cost"]["wall_time_s"] >= 0
        and r["cost"]["peak_memory_mb"] > 0
    )


def test_pca_cannot_exceed_the_rank_bound_on_tms(toy) -> None:
    """W is 2x5 (rank 2): a rank-1 component read or written through a 2-d layer can equal W[:, c] e_c^T only if
    e_c lies in W's 2-d row space, which at most 2 of the 5 features can. So PCA recovers at most 2 features."""
    t = toy("tms_5-2")
    rank = int(torch.linalg.matrix_rank(t.model.W))
    assert rank == 2
    for seed in range(3):
        dec = METHODS.get("pca")().decompose(t.target(), Budget(), seed)
        assert len(dec) <= rank * len(t.sites(t.model, t.sample(8, torch.Generator())))
        best = ComponentSpace(t, dec).own.cosines.max(dim=1).values
        assert int((best >= 0.9).sum()) <= rank


def test_leaderboard_regenerates_from_stored_results(quick_run, capsys) -> None:
    root, printed = quick_run
    out = root.parent / "board"
    assert main(["leaderboard", "--results", str(root), "--out", str(out)]) == 0
    text = (out / "LEADERBOARD.md").read_text()
    for method in BASELINES.split(","):
        assert f"| {method} (ref)" in text
    assert "| block_mlp " in text and "| tms_5-2 " in text


def test_same_seed_same_weights_and_scores(tmp_path, quick_run) -> None:
    first, _ = quick_run
    again = tmp_path / "again"
    assert main(["run", "--toys", TOYS, "--methods", BASELINES, "--results", str(again), "--no-leaderboard"]) == 0
    a, b = _results(first), _results(again)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key]["metrics"] == b[key]["metrics"], key
        assert a[key]["toy"]["weights_sha256"] == b[key]["toy"]["weights_sha256"]


def test_stored_cells_are_skipped(quick_run, capsys) -> None:
    root, _ = quick_run
    before = {p: p.stat().st_mtime_ns for p in root.rglob("seed*.json")}
    assert main(["run", "--toys", TOYS, "--methods", BASELINES, "--results", str(root), "--no-leaderboard"]) == 0
    assert "0 to run" in capsys.readouterr().err
    assert before == {p: p.stat().st_mtime_ns for p in root.rglob("seed*.json")}


PLUGIN = textwrap.dedent('''
    """A method defined outside the package: one component per column of each weight matrix."""
    import torch
    from benchmark.decomposition import Decomposition
    from benchmark.method import Method
    from benchmark.registry import METHODS

    @METHODS.register("columns_plugin")
    class Columns(Method):
        name = "columns_plugin"
        version = "1"

        def decompose(self, target, budget, seed, device="cpu"):
            comps = []
            for n, p in target.params().items():
                for c in range(p.shape[1]):
                    mask = torch.zeros_like(p)
                    mask[:, c] = 1
                    comps.append({n: p.detach() * mask})
            return Decomposition(comps, faithful=True)
''')


def test_a_plugin_method_is_registered_run_and_scored(tmp_path, capsys) -> None:
    plugin = tmp_path / "elsewhere" / "my_method.py"
    plugin.parent.mkdir()
    plugin.write_text(PLUGIN)
    root = tmp_path / "res"
    assert (
        main(
            ["--plugin", str(plugin), "run", "--toys", "tms_5-2", "--methods", "columns_plugin", "--results", str(root)]
        )
        == 0
    )
    r = _results(root)[("tms_5-2", "columns_plugin", 0)]
    assert r["status"] == "ok"
    # On TMS each mechanism is exactly one column of W, so the column split recovers it exactly.
    assert r["metrics"]["hungarian"] == pytest.approx(1.0, abs=1e-9)
    assert "columns_plugin" in capsys.readouterr().out


def test_unknown_names_fail_with_the_known_ones(capsys) -> None:
    assert main(["run", "--toys", "tms_5-3", "--methods", "oracle"]) == 2
    err = capsys.readouterr().err
    assert "unknown toy model 'tms_5-3'" in err and "tms_5-2" in err
