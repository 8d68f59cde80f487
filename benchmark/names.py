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


def check_name(name: Any, kind: str = "name") -> str:
    """``name`` if it is a valid registered name (letters, digits, ``_ . @ -``, 1 to 100 characters, not
    ``.`` or ``..``, not starting with a dot); else a ValueError that says so."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name.startswith("."):
        raise ValueError(
            f"{kind} {name!r} is not a valid name: use 1 to 100 letters, digits and '_ . @ -', not starting with a dot"
        )
    return name
