"""Command-line arguments that several ``pdbench`` verbs share (``run`` and ``submit``): their parsers and
the options that decide how cells execute. Importing it loads no torch."""

from __future__ import annotations

import argparse

from benchmark.names import TUNED


def csv_list(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in csv_list(text) or []]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be one or more integers >= 0, got {text!r}")
    return seeds


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return n


def limit(text: str) -> float | None:
    """A positive number, or 'none' for no limit."""
    if text.strip().lower() in ("none", "off", "0"):
        return None
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number or 'none', got {text!r}")
    return v


def hparams_arg(text: str) -> dict[str, dict]:
    """``'method.key=value,...'`` -> ``{method: {key: value}}``; a value is read as JSON where it parses
    (3, 0.01, true, null, "x", [1, 2]), else kept as text. A list value's commas are inside brackets."""
    import json

    out: dict[str, dict] = {}
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(text):
        depth += ch in "[{" and 1 or 0
        depth -= ch in "]}" and 1 or 0
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    for part in (p.strip() for p in parts):
        if not part:
            continue
        key, eq, value = part.partition("=")
        method, dot, name = key.strip().partition(".")
        if not (eq and dot and method and name):
            raise argparse.ArgumentTypeError(f"expected method.key=value, got {part!r}")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value.strip()
        out.setdefault(method, {})[name.strip()] = parsed
    if not out:
        raise argparse.ArgumentTypeError(f"no method.key=value in {text!r}")
    return out


def add_hparams_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hparams",
        type=hparams_arg,
        metavar="METHOD.KEY=VALUE,...",
        help="hyperparameter overrides, e.g. 'apd.C=8,spd.lr=0.01' (recorded in each result; a folder never mixes "
        "cells run with and without them)",
    )
    p.add_argument(
        "--blind",
        action="store_true",
        help="every method runs its one blind rule, the papers' per-toy settings off (the override tuned=false; "
        "docs/protocol.md)",
    )


def requested_hparams(args: argparse.Namespace, methods: list[str]) -> dict[str, dict]:
    """``--hparams``, plus ``tuned=False`` for every method under ``--blind``."""
    out = {m: dict(hp) for m, hp in (args.hparams or {}).items()}
    if args.blind:
        for m in methods:
            out.setdefault(m, {})[TUNED] = False
    return out


def add_execution_arguments(p: argparse.ArgumentParser) -> None:
    """--executor, --jobs, --rerun and --retry-errors, the same for every verb that runs cells."""
    p.add_argument(
        "--executor",
        default="local",
        choices=["local", "serial", "ray"],
        help="local: worker processes (default); serial: this process, no isolation (debugging); ray: a Ray "
        "cluster (RAY_ADDRESS) or a local Ray instance (pip install 'pdbench[ray]')",
    )
    p.add_argument("-j", "--jobs", type=positive_int, help="parallel workers (default: one per CPU core)")
    p.add_argument("--rerun", action="store_true", help="run cells again even if a result is stored")
    p.add_argument("--retry-errors", action="store_true", help="run stored error rows again")
