"""The held-out tier and the two-track board (toy-ladder and blind-protocol issues): instances drawn from a
seed that is never stored, toy instances as replicates of one cell, and the public/held-out comparison."""

from __future__ import annotations

import json

import pytest

from benchmark import heldout
from benchmark.suites import suite_cells
from leaderboard.data import build_board
from leaderboard.markdown import render_markdown
from tests.test_leaderboard import fake


def test_heldout_instances_are_seeded_distinct_and_never_public() -> None:
    a = heldout.instances("s3cret", 3)
    assert a == heldout.instances("s3cret", 3)  # deterministic
    assert len(set(a)) == 3 and all(heldout.is_heldout(k) for k in a)
    assert a != heldout.instances("other", 3)
    assert not heldout.is_heldout(2)


def test_a_secret_seed_comes_from_the_environment_and_only_its_hash_is_stored(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(heldout.ENV, raising=False)
    with pytest.raises(heldout.HeldOutError, match=heldout.ENV):
        heldout.resolve_seed("env")
    monkeypatch.setenv(heldout.ENV, "never-written-anywhere")
    secret = heldout.resolve_seed("env")
    heldout.record(tmp_path, secret)
    heldout.record(tmp_path, secret)  # recorded once
    text = (tmp_path / heldout.RECORD).read_text()
    assert "never-written-anywhere" not in text
    assert json.loads(text) == {"seed_sha256": [heldout.seed_sha256(secret)]}


def test_the_headline_suite_draws_heldout_instances() -> None:
    public, _ = suite_cells("headline", methods=["pca"])
    held, _ = suite_cells("headline", methods=["pca"], heldout_seed="s3cret")
    assert len(public) == len(held) and {c.toy.split("@")[0] for c in public} == {c.toy.split("@")[0] for c in held}
    assert all(int(c.toy.split("@")[1]) < 3 for c in public)
    assert all(heldout.is_heldout(int(c.toy.split("@")[1])) for c in held)
    with pytest.raises(ValueError, match="headline"):
        suite_cells("quick", heldout_seed="s3cret")


def _tracked(toy: str, method: str, seed: int, value: float, track: str, **kw) -> dict:  # noqa: ANN003
    r = fake(toy.split("@")[0], method, seed, value, **kw)
    r["cell"]["toy"] = toy
    r["toy"].update(name=toy, track=track, weights_sha256=f"{toy}-sha")
    return r


def test_instances_are_replicates_and_the_board_ranks_the_headline_track() -> None:
    rs = []
    for k, (good, tuned) in enumerate([(0.9, 0.8), (0.8, 0.85), (0.85, 0.9)]):
        rs += [
            _tracked(f"toy_a@{k}", "good", 0, good, "headline"),
            _tracked(f"toy_a@{k}", "tuned", 0, tuned, "headline"),
        ]
    for k, (good, tuned) in zip(heldout.instances("s", 3), [(0.88, 0.2), (0.86, 0.25), (0.9, 0.3)], strict=True):
        rs += [
            _tracked(f"toy_a@{k}", "good", 0, good, "headline"),
            _tracked(f"toy_a@{k}", "tuned", 0, tuned, "headline"),
        ]
    rs += [_tracked("toy_b", m, s, v, "reproduction") for m, v in (("good", 0.1), ("tuned", 1.0)) for s in range(3)]
    board = build_board(rs)
    assert board.overall.track == "headline" and [t.name for t in board.overall.toys] == ["toy_a"]
    cell = board.cell("good", "toy_a")
    assert cell.values == {(0, 0): 0.9, (1, 0): 0.8, (2, 0): 0.85}  # the three instances, one seed
    assert board.overall.rows[0].method.name == "good"  # the reproduction toy does not enter the ranking
    repro = [t for t in board.tiers if t.track == "reproduction"]
    assert repro and repro[0].rows[0].method.name == "tuned"  # it has its own table
    gaps = {g.method.name: g for g in board.heldout}
    assert gaps["tuned"].flagged and gaps["tuned"].gap == pytest.approx(0.85 - 0.25)
    assert gaps["tuned"].heldout.low is not None  # held-out runs have an interval too
    assert not gaps["good"].flagged
    md = render_markdown(board)
    assert "## Public and held-out instances" in md and "! gap beyond the intervals" in md
    assert "## Held-out track, tier 0" in md and "## Reproduction track, tier 1" in md


def test_the_cli_refuses_a_missing_secret_and_a_suite_without_instances(tmp_path, monkeypatch, capsys) -> None:
    from benchmark.cli import main

    monkeypatch.delenv(heldout.ENV, raising=False)
    results = str(tmp_path / "r")
    assert main(["run", "--suite", "headline", "--heldout-seed", "env", "--results", results]) == 2
    assert heldout.ENV in capsys.readouterr().err
    assert main(["run", "--suite", "quick", "--heldout-seed", "7", "--results", results]) == 2
    assert "headline" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing written


@pytest.mark.parametrize("family", ["shared_circuits-rot", "gated_circuits-rot"])
def test_generated_instances_beyond_the_public_ones_keep_the_oracle_at_one(family, tmp_path) -> None:
    """Held-out instances are drawn from any seed: the generator must give a valid toy for each. A held-out
    draw once paired two circuits on 4 of their 6 features, which the co-activation grouping joined (oracle
    0.943); the generator now refuses such draws."""
    from benchmark.cache import WeightCache
    from benchmark.method import Budget
    from benchmark.registry import METHODS
    from benchmark.scoring import score
    from benchmark.toy import load_toy

    for k in [*heldout.instances("pdbench-test", 2), 57496859]:
        t = load_toy(f"{family}@{k}", WeightCache(tmp_path))
        dec = METHODS.get("oracle")().decompose(t.target(with_ground_truth=True), Budget(), 0)
        assert score(t, dec, ["hungarian"])["hungarian"] == pytest.approx(1.0, abs=1e-9), k


def test_a_capped_run_on_a_headline_toy_is_on_the_budget_track_never_the_headline() -> None:
    """``--suite budget`` runs the headline cells under a CPU-time cap: those runs get their own toy rows on a
    "budget" track, and the headline ranks only the uncapped ones; a run that was not uncapped never enters it."""
    rs = [_tracked(f"toy_a@{k}", "slow", 0, 0.9, "headline") for k in range(3)]
    for k in range(3):
        capped = _tracked(f"toy_a@{k}", "slow", 0, 0.3, "headline")
        capped["budget"]["seconds"] = 120.0
        capped["cost"]["stopped_early"] = True
        rs.append(capped)
    board = build_board(rs)
    assert board.overall.track == "headline" and [t.name for t in board.overall.toys] == ["toy_a"]
    assert board.cell("slow", "toy_a").score.mean == pytest.approx(0.9)
    assert board.cell("slow", "toy_a (capped)").capped == [(0, 0), (1, 0), (2, 0)]
    assert any(t.track == "budget" for t in board.tiers)
    assert "Capped (budget) track" in render_markdown(board)


def test_runs_whose_loss_still_fell_are_marked_in_the_cell() -> None:
    rs = [_tracked(f"toy_a@{k}", "m", 0, 0.5, "headline") for k in range(3)]
    rs[1]["cost"]["converged"] = False
    rs[2]["cost"]["converged"] = True
    board = build_board(rs)
    assert board.cell("m", "toy_a").unconverged == [(1, 0)]
    assert "~1" in render_markdown(board)
