"""The committed leaderboard as CI checks it: ``pdbench validate`` re-scores every cell from its stored
decomposition (about two minutes on one core, so this file is started first: ``tests/conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_committed_leaderboard_results_pass_validation(capsys):
    """The verdict CI gives on the committed results: valid, at least 3 seeds per cell, artefacts up to date,
    and every cell re-scored from its stored decomposition to its stored metrics."""
    committed = ROOT / "leaderboard" / "results"
    if not any(committed.rglob("seed*.json")):
        pytest.skip("no results committed under leaderboard/results yet")
    rc = main(["validate", str(committed), "--min-seeds", "3"])
    out = capsys.readouterr().out
    assert rc == 0, out
