"""The code base stays `ruff` clean (ruff comes with the `dev` extra)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (pip install -e '.[dev]')")
def test_ruff_is_clean() -> None:
    out = subprocess.run(["ruff", "check", "--quiet", "."], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (pip install -e '.[dev]')")
def test_ruff_format_is_clean() -> None:
    """The code base is kept in `ruff format` style (adopted in one formatting-only commit)."""
    out = subprocess.run(["ruff", "format", "--check", "--quiet", "."], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, "run `ruff format .`:\n" + out.stdout + out.stderr
