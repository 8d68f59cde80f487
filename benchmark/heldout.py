"""The held-out tier (blind-protocol issue): headline toy instances that no adapter can have seen.

The public board scores instances 0, 1, 2 of each headline toy model (the ``headline`` suite). A held-out
run draws its instances from a seed instead: ``pdbench run --suite headline --heldout-seed S`` scores
instances ``HELDOUT_BASE + h(S, i)``, which only someone who knows S can name in advance. A maintainer
keeps S secret in the environment (``--heldout-seed env`` reads ``PDBENCH_HELDOUT_SEED``); it is never
written anywhere. The results folder keeps only its SHA-256 (``heldout.json``), so a later run can show
it used the same seed. The leaderboard puts instances at or above ``HELDOUT_BASE`` on their own
``held-out`` track and sets each method's held-out score beside its public one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from benchmark.files import atomic_write_bytes

HELDOUT_BASE = 1000  # instances 0 .. 999 are public; a held-out instance is drawn at or above this
SPAN = 10**8
ENV = "PDBENCH_HELDOUT_SEED"
RECORD = "heldout.json"


class HeldOutError(ValueError):
    """A held-out seed that cannot be used (empty, or asked from an unset environment variable)."""


def resolve_seed(value: str) -> str:
    """The seed itself: ``value``, or the environment variable's value when ``value`` is ``"env"``."""
    seed = os.environ.get(ENV, "") if value == "env" else value
    if not seed.strip():
        raise HeldOutError(
            f"--heldout-seed env needs the environment variable {ENV} set to a non-empty secret"
            if value == "env"
            else "the held-out seed is empty"
        )
    return seed


def seed_sha256(seed: str) -> str:
    return hashlib.sha256(f"pdbench-heldout:{seed}".encode()).hexdigest()


def instances(seed: str, n: int) -> list[int]:
    """``n`` distinct held-out instances drawn from ``seed`` (all >= ``HELDOUT_BASE``). Every toy model takes
    the same instance numbers, so the leaderboard pairs its held-out runs across toy models as it pairs the
    public instances 0, 1, 2."""
    out: list[int] = []
    i = 0
    while len(out) < n:
        digest = hashlib.sha256(f"pdbench-heldout:{seed}:{i}".encode()).digest()
        k = HELDOUT_BASE + int.from_bytes(digest[:8], "big") % SPAN
        if k not in out:
            out.append(k)
        i += 1
    return out


def is_heldout(instance: int) -> bool:
    return instance >= HELDOUT_BASE


def record(results: Path, seed: str) -> None:
    """Add the seed's SHA-256 (never the seed) to ``results/heldout.json``."""
    path = Path(results) / RECORD
    try:
        known = json.loads(path.read_text())["seed_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        known = []
    digest = seed_sha256(seed)
    if digest not in known:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps({"seed_sha256": [*known, digest]}, indent=1).encode() + b"\n")
