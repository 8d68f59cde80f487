"""Registered names: identifiers, never paths.

Methods, toy models and metrics are registered under names of 1 to 100 letters, digits and ``_ . @ -``
that do not start with a dot (so never ``.`` or ``..``); a cell may also name a ``module:object``
reference. :func:`benchmark.results.path_part` turns either into one path component, one to one.
"""

from __future__ import annotations

import re
from typing import Any

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.@-]{1,100}")
REF_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,150}:[A-Za-z_][A-Za-z0-9_.]{0,100}")
INSTANCE_PATTERN = re.compile(r"(.+)@(\d{1,9})")  # a toy instance: "name@k" is toy model "name" drawn from seed k
#: The hyperparameter override that switches a method's per-model defaults off (``tuned=False``, ``--blind``):
#: the method runs its one blind rule on every toy (docs/protocol.md).
TUNED = "tuned"


def family(toy: str) -> str:
    """The toy model a cell's toy names, without its instance: ``"x-rot@2"`` -> ``"x-rot"``."""
    m = INSTANCE_PATTERN.fullmatch(toy)
    return m[1] if m else toy


def instance(toy: str) -> int:
    """The instance (toy seed) a cell's toy names: ``"x@2"`` -> 2; a plain name is instance 0 (its default seed)."""
    m = INSTANCE_PATTERN.fullmatch(toy)
    return int(m[2]) if m else 0


def check_name(name: Any, kind: str = "name") -> str:
    """``name`` if it is a valid registered name (letters, digits, ``_ . @ -``, 1 to 100 characters, not
    ``.`` or ``..``, not starting with a dot); else a ValueError that says so."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name.startswith("."):
        raise ValueError(
            f"{kind} {name!r} is not a valid name: use 1 to 100 letters, digits and '_ . @ -', not starting with a dot"
        )
    return name
