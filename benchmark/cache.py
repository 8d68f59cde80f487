"""On-disk cache of toy-model weights, each file checked against its SHA-256 on load; and shipped weights.

Layout: ``<root>/<key>.pt`` (a ``torch.save`` of the state dict) beside ``<key>.json`` holding the
file's SHA-256, the weights' SHA-256 and the build metadata. A file whose hash does not match, that
cannot be read, or whose metadata is missing is reported (a warning naming the file) and rebuilt,
never used. Root: ``$PDBENCH_CACHE`` or ``~/.cache/pdbench``.

Shipped weights (:func:`read_shipped`, :func:`write_shipped`) are a safetensors file that comes with a toy
model's package, its metadata holding the weights' SHA-256 and the build metadata. They are for a trained toy
model whose training is not bit-reproducible across CPUs (another CPU's kernels round differently, and a few
thousand optimiser steps carry that into the weights), so that every machine scores the same weights, and for
one that a fresh clone's quick suite or tests would otherwise spend minutes training (docs/adding_a_toy.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from benchmark.files import atomic_write_bytes, file_sha256
from benchmark.stored import safetensors_metadata


class CacheWarning(UserWarning):
    """A cache file was corrupt or stale and is being rebuilt."""


def default_cache_dir() -> Path:
    env = os.environ.get("PDBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pdbench"


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of tensor names, dtypes, shapes and bytes, independent of how the file was written."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class WeightCache:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.pt", self.root / f"{key}.json"

    def read_meta(self, key: str) -> dict[str, Any] | None:
        """The metadata of the cached weights ``key`` (unchecked: the weights are not read), or None."""
        try:
            return json.loads(self.paths(key)[1].read_text())
        except (OSError, ValueError):
            return None

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The cached state dict and metadata, or None when absent or invalid (with a warning)."""
        pt, meta_path = self.paths(key)
        if not pt.exists() and not meta_path.exists():
            return None
        problem = None
        try:
            meta = json.loads(meta_path.read_text())
            if file_sha256(pt) != meta["file_sha256"]:
                problem = "its SHA-256 does not match the one recorded when it was written"
            else:
                state = torch.load(pt, map_location="cpu", weights_only=True)
                if weights_sha256(state) != meta["weights_sha256"]:
                    problem = "its weights' SHA-256 does not match the recorded one"
                else:
                    return state, meta
        except FileNotFoundError as exc:
            problem = f"a part of it is missing ({Path(exc.filename).name})"
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            problem = f"its metadata is unreadable ({type(exc).__name__}: {exc})"
        except Exception as exc:  # torch.load on a truncated or garbage file
            problem = f"it cannot be read ({type(exc).__name__}: {exc})"
        warnings.warn(f"toy-model cache {pt} is invalid: {problem}; rebuilding it", CacheWarning, stacklevel=2)
        return None

    def save(self, key: str, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
        pt, meta_path = self.paths(key)
        state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        meta = dict(meta, weights_sha256=weights_sha256(state), file_sha256=hashlib.sha256(data).hexdigest())
        atomic_write_bytes(pt, data)
        atomic_write_bytes(meta_path, json.dumps(meta, indent=2, sort_keys=True).encode())
        return meta


class ShippedWeightsError(RuntimeError):
    """A shipped weights file that cannot be read or does not hold the weights its metadata names."""


def read_shipped(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and build metadata (``weights_sha256``, ``train_seed``, ``extra``) of a shipped file."""
    try:
        data = Path(path).read_bytes()
        state = load(data)
        raw = safetensors_metadata(data)
        meta = {"weights_sha256": raw["weights_sha256"], "train_seed": int(raw["train_seed"])}
        meta["extra"] = json.loads(raw.get("extra", "{}"))
    except (OSError, SafetensorError, ValueError, KeyError, TypeError) as exc:
        raise ShippedWeightsError(
            f"shipped toy-model weights {path} cannot be read ({type(exc).__name__}: {exc}); reinstall pdbench"
        ) from None
    if weights_sha256(state) != meta["weights_sha256"]:
        raise ShippedWeightsError(
            f"shipped toy-model weights {path} do not match the SHA-256 they record; reinstall pdbench"
        )
    return state, meta


def write_shipped(path: Path, state: dict[str, torch.Tensor], train_seed: int, extra: dict[str, Any]) -> str:
    """Write ``state`` as shipped weights (atomically); returns their SHA-256."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    sha = weights_sha256(state)
    meta = {"weights_sha256": sha, "train_seed": str(train_seed), "extra": json.dumps(extra, sort_keys=True)}
    atomic_write_bytes(Path(path), save(state, metadata=meta))
    return sha
