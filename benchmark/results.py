"""Result files: one JSON per cell (toy model x method x seed), with a versioned schema.

Files live at ``<results>/<toy>/<method>/seed<k>.json`` and are written atomically (temporary file and
rename), so an interrupted run never leaves a partial file. ``load_results`` refuses files it cannot
trust (unreadable JSON, another schema version, missing fields) and reports them instead of loading them.
"""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmark import __version__
from benchmark.cache import atomic_write_bytes

SCHEMA_VERSION = 1
REQUIRED = ("schema_version", "cell", "status", "metrics", "toy", "method")


class ResultError(ValueError):
    """A result file that cannot be trusted."""


@dataclass(frozen=True, order=True)
class Cell:
    toy: str
    method: str
    seed: int

    def path(self, root: Path) -> Path:
        return Path(root) / _safe(self.toy) / _safe(self.method) / f"seed{self.seed}.json"

    def to_dict(self) -> dict[str, Any]:
        return {"toy": self.toy, "method": self.method, "seed": self.seed}


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.@" else "_" for ch in name)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict[str, str]:
    import numpy
    import scipy
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "scipy": scipy.__version__, "platform": platform.platform(), "benchmark": __version__}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_result(root: Path, result: dict[str, Any]) -> Path:
    cell = Cell(**result["cell"])
    path = cell.path(root)
    data = json.dumps(result, indent=2, sort_keys=True, allow_nan=False).encode() + b"\n"
    atomic_write_bytes(path, data)
    return path


def read_result(path: Path) -> dict[str, Any]:
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(result, dict):
        raise ResultError(f"{path}: a result must be a JSON object")
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        raise ResultError(f"{path}: missing field(s) {missing}")
    if result["schema_version"] != SCHEMA_VERSION:
        raise ResultError(f"{path}: schema version {result['schema_version']!r}, this pdbench reads "
                          f"{SCHEMA_VERSION}; re-run the cell with `pdbench run` to regenerate it")
    if result["status"] not in ("ok", "error"):
        raise ResultError(f"{path}: status must be 'ok' or 'error', not {result['status']!r}")
    return result


def load_results(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """All trustworthy results under ``root``, and one message per file that was refused."""
    results, problems = [], []
    root = Path(root)
    if not root.exists():
        return results, problems
    for path in sorted(root.rglob("*.json")):
        try:
            results.append(read_result(path))
        except ResultError as exc:
            problems.append(str(exc))
    return results, problems


def is_done(root: Path, cell: Cell) -> bool:
    """True when a valid, successful result for ``cell`` is stored."""
    path = cell.path(root)
    if not path.exists():
        return False
    try:
        return read_result(path)["status"] == "ok"
    except ResultError:
        return False
