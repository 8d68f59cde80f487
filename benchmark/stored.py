"""Stored decompositions: what a method returned, as data, so that every score can be computed again.

A cell's decomposition is stored beside its result as ``seed<k>.safetensors``: every component (dense
tensors, or the ``left``/``right`` factors of a :class:`~benchmark.decomposition.LowRank`), the groups, the
``faithful`` claim and the attributions on the fixed evaluation inputs (``scoring.eval_inputs``). Components are
float32 (a mostly-zero tensor as its non-zero entries); attributions float16, divided by their largest value.
safetensors holds only tensors and a JSON header: loading it never executes code (unlike pickle).

The runner scores the *stored* decomposition, not the method's objects, so ``pdbench rescore`` and
``pdbench validate`` reproduce every metric from the file alone, in a process that never imports method
code. Storing float32 is what makes this exact: the stored file is the decomposition that was scored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from benchmark.decomposition import Component, Decomposition, DecompositionError, LowRank

FORMAT = "pdbench-decomposition"
FORMAT_VERSION = "1"
SUFFIX = ".safetensors"
MAX_BYTES = 256 * 2**20  # far above any toy model's decomposition; a larger file is refused unread
DTYPE = torch.float32
# Attributions are stored divided by their largest value, in float16 (relative precision 5e-4): every metric
# reads them only through a threshold relative to that largest value, and the stored values are the ones scored.
ATTRIBUTION_DTYPE = torch.float16
COMPACT_ABOVE_BYTES = 4 * 2**20  # larger float32 components are stored as float16 (see ``compacted``)
LOW_RANK_TOL = 1e-6  # a dense matrix is stored as factors when they reproduce it within this (x its largest entry)


class StoredDecompositionError(ValueError):
    """A stored decomposition that cannot be read or does not describe a valid decomposition."""


@dataclass
class StoredDecomposition:
    """A decomposition reduced to data: components, groups, the faithfulness claim and the attributions on
    the evaluation inputs (``[n_eval, C]``, or None where the method gives none)."""

    components: list[Component]
    groups: list[list[int]] | None
    faithful: bool
    attributions: Tensor | None
    precision: str = "float32"  # of the component values in the file: "float32", or "float16" (compacted)
    # where the attributions are causal importances (Decomposition.importances): the largest one, by which the
    # stored attributions were divided; None otherwise (and in files stored before the flag existed)
    importance_scale: float | None = None

    @property
    def component_numel(self) -> int:
        """Numbers the components take when stored (factors or dense, whichever is smaller)."""
        return sum(_stored_numel(v) for c in self.components for v in c.values())

    def compacted(self) -> StoredDecomposition:
        """This decomposition with float16 component values when float32 ones would exceed
        :data:`COMPACT_ABOVE_BYTES` (else itself). The scorer scores the compacted file and records how far
        every metric moved from the float32 scores (``decomposition.metric_shift`` in the result)."""
        if self.precision == "float16" or 4 * self.component_numel <= COMPACT_ABOVE_BYTES:
            return self
        return StoredDecomposition(
            self.components, self.groups, self.faithful, self.attributions, "float16", self.importance_scale
        )

    @classmethod
    def capture(cls, dec: Decomposition, eval_inputs: Tensor) -> StoredDecomposition:
        """The data of a (validated) decomposition; the method's attribution function runs here, once."""
        comps = [{n: _to_storage(v) for n, v in c.items()} for c in dec.components]
        attr = dec.attributions_on(eval_inputs)
        scale = None
        if attr is not None:
            top = float(attr.max()) if attr.numel() else 0.0
            if dec.importances:
                if top > 1 + 1e-6:
                    raise DecompositionError(f"importances must lie in [0, 1]; the largest is {top:.6g}")
                scale = top
            attr = (attr / top if top > 0 else attr).to(ATTRIBUTION_DTYPE).contiguous()
        groups = None if dec.groups is None else [[int(i) for i in g] for g in dec.groups]
        return cls(comps, groups, bool(dec.faithful), attr, importance_scale=scale)

    def decomposition(self, eval_inputs: Tensor | None = None) -> Decomposition:
        """A :class:`Decomposition` whose attributions answer the evaluation inputs from the stored tensor."""
        stored = self.attributions

        def attributions(x: Tensor) -> Tensor:
            if eval_inputs is not None and (x.shape != eval_inputs.shape or not torch.equal(x, eval_inputs)):
                raise DecompositionError("a stored decomposition has attributions for the evaluation inputs only")
            assert stored is not None
            return stored

        return Decomposition(
            components=[dict(c) for c in self.components],
            attributions=None if stored is None else attributions,
            groups=None if self.groups is None else [list(g) for g in self.groups],
            faithful=self.faithful,
            importances=self.importance_scale is not None,
            importance_scale=1.0 if self.importance_scale is None else self.importance_scale,
        )

    # -- bytes ----------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        tensors: dict[str, Tensor] = {}
        layout: list[dict[str, Any]] = []
        dtype = {"float32": torch.float32, "float16": torch.float16}[self.precision]
        for i, comp in enumerate(self.components):
            entry: dict[str, Any] = {}
            for name, v in comp.items():
                key = f"c{i}/{len(entry)}"
                if isinstance(v, LowRank) and v.left.numel() + v.right.numel() >= _numel(v.shape):
                    v = v.dense()  # factors no smaller than the matrix: the matrix (the same float32 product)
                if isinstance(v, LowRank):
                    tensors[key + "/left"] = v.left.to(dtype).contiguous()
                    tensors[key + "/right"] = v.right.to(dtype).contiguous()
                    entry[name] = {"key": key, "kind": "lowrank"}
                elif 4 * int(torch.count_nonzero(v)) <= v.numel():  # mostly zeros: the non-zero entries
                    flat = v.reshape(-1)
                    idx = torch.nonzero(flat).flatten()
                    tensors[key + "/index"] = idx.to(torch.int32)
                    tensors[key + "/value"] = flat[idx].to(dtype).contiguous()
                    entry[name] = {"key": key, "kind": "sparse", "shape": list(v.shape)}
                else:
                    tensors[key] = v.to(dtype).contiguous()
                    entry[name] = {"key": key, "kind": "dense"}
            layout.append(entry)
        attr_kind = None
        if self.attributions is not None:
            a = self.attributions
            if 4 * int(torch.count_nonzero(a)) <= a.numel():  # mostly zeros (e.g. hard-sigmoid importances)
                idx = torch.nonzero(a.reshape(-1)).flatten()
                tensors["attributions/index"] = idx.to(torch.int32)
                tensors["attributions/value"] = a.reshape(-1)[idx].contiguous()
                attr_kind = {"kind": "sparse", "shape": list(a.shape)}
            else:
                tensors["attributions"] = a
                attr_kind = {"kind": "dense"}
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "layout": json.dumps(layout, sort_keys=True),
            "groups": json.dumps(self.groups),
            "faithful": json.dumps(self.faithful),
            "attributions": json.dumps(attr_kind),
            "precision": self.precision,
        }
        if self.importance_scale is not None:  # absent otherwise, so that files without importances stay byte-identical
            meta["importance_scale"] = json.dumps(self.importance_scale)
        return _save(tensors, meta)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "stored decomposition") -> StoredDecomposition:
        from safetensors import SafetensorError
        from safetensors.torch import load

        if len(data) > MAX_BYTES:
            raise StoredDecompositionError(f"{where}: {len(data)} bytes is larger than any decomposition stored here")
        try:
            tensors = load(data)
            meta = safetensors_metadata(data)
        except (SafetensorError, ValueError, OSError, RuntimeError) as exc:
            raise StoredDecompositionError(f"{where}: not a readable safetensors file ({exc})") from None
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise StoredDecompositionError(
                f"{where}: not a {FORMAT} file of version {FORMAT_VERSION} "
                f"(format {meta.get('format')!r}, version {meta.get('format_version')!r})"
            )
        try:
            layout = json.loads(meta["layout"])
            groups = json.loads(meta["groups"])
            faithful = json.loads(meta["faithful"])
            used = set()
            comps: list[Component] = []
            for entry in layout:
                comp: Component = {}
                for name, spec in entry.items():
                    key, kind = spec["key"], spec["kind"]
                    if kind == "lowrank":
                        comp[name] = LowRank(_tensor(tensors, key + "/left"), _tensor(tensors, key + "/right"))
                        used |= {key + "/left", key + "/right"}
                    elif kind == "dense":
                        comp[name] = _tensor(tensors, key)
                        used.add(key)
                    elif kind == "sparse":
                        comp[name] = _sparse(tensors, key, spec["shape"])
                        used |= {key + "/index", key + "/value"}
                    else:
                        raise StoredDecompositionError(f"unknown component kind {kind!r}")
                comps.append(comp)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoredDecompositionError(f"{where}: malformed layout ({type(exc).__name__}: {exc})") from None
        try:
            attr_kind = json.loads(meta.get("attributions", "null"))
            if attr_kind is None:
                attr = None
            elif attr_kind["kind"] == "dense":
                attr = tensors["attributions"]
                used.add("attributions")
            elif attr_kind["kind"] == "sparse":
                attr = _sparse(tensors, "attributions", attr_kind["shape"], ATTRIBUTION_DTYPE)
                used |= {"attributions/index", "attributions/value"}
            else:
                raise ValueError(f"unknown attributions kind {attr_kind['kind']!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise StoredDecompositionError(f"{where}: malformed attributions ({type(exc).__name__}: {exc})") from None
        extra = set(tensors) - used
        if extra:
            raise StoredDecompositionError(f"{where}: tensors {sorted(extra)[:5]} belong to no component")
        if not isinstance(faithful, bool) or not (
            groups is None or (isinstance(groups, list) and all(isinstance(g, list) for g in groups))
        ):
            raise StoredDecompositionError(f"{where}: malformed groups or faithful flag")
        if attr is not None and (
            attr.dtype != ATTRIBUTION_DTYPE
            or attr.dim() != 2
            or attr.shape[1] != len(comps)
            or not torch.isfinite(attr).all()
        ):
            raise StoredDecompositionError(f"{where}: attributions of shape {tuple(attr.shape)} do not fit")
        precision = meta.get("precision", "float32")
        if precision not in ("float32", "float16"):
            raise StoredDecompositionError(f"{where}: unknown precision {precision!r}")
        try:
            scale = json.loads(meta["importance_scale"]) if "importance_scale" in meta else None
        except ValueError:
            scale = "unreadable"
        if scale is not None and (
            attr is None or isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 <= scale <= 1 + 1e-6
        ):
            raise StoredDecompositionError(f"{where}: importance scale {scale!r} is not a number in [0, 1]")
        return cls(comps, groups, faithful, attr, precision, None if scale is None else float(scale))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _to_storage(v: Tensor | LowRank) -> Tensor | LowRank:
    if isinstance(v, LowRank):
        return LowRank(_cpu(v.left), _cpu(v.right))
    return _low_rank_or_dense(_cpu(v))


def _low_rank_or_dense(t: Tensor) -> Tensor | LowRank:
    """A matrix that is low-rank up to float32 rounding as its factors (where they are less than half its
    size and reproduce every entry within ``LOW_RANK_TOL`` of its largest entry); otherwise as it is."""
    if t.dim() != 2 or min(t.shape) < 4:
        return t
    m, n = t.shape
    top = float(t.abs().max())
    if top == 0.0 or 4 * int(torch.count_nonzero(t)) <= t.numel():
        return t  # zero or mostly zeros: stored sparse
    u, s, vh = torch.linalg.svd(t.double(), full_matrices=False)
    r = int((s > s[0] * LOW_RANK_TOL).sum())
    if r * (m + n) * 2 > m * n:
        return t
    left, right = (u[:, :r] * s[:r]).to(DTYPE).contiguous(), vh[:r].to(DTYPE).contiguous()
    if float((left.double() @ right.double() - t.double()).abs().max()) > LOW_RANK_TOL * top:
        return t
    return LowRank(left, right)


def _cpu(t: Tensor) -> Tensor:
    return t.detach().to("cpu", DTYPE).contiguous().clone()


def _tensor(tensors: dict[str, Tensor], key: str) -> Tensor:
    """A component tensor, as float32 (float16 files hold float16 values, scored as they are stored)."""
    t = tensors[key]
    if t.dtype not in (torch.float32, torch.float16):
        raise StoredDecompositionError(f"tensor {key!r} is {t.dtype}, expected float32 or float16")
    t = t.to(DTYPE)
    return t


def _sparse(tensors: dict[str, Tensor], key: str, shape: list[int], dtype: torch.dtype = DTYPE) -> Tensor:
    idx, val = tensors[key + "/index"], tensors[key + "/value"]
    if dtype == DTYPE and val.dtype == torch.float16:
        val = val.to(DTYPE)
    if val.dtype != dtype:
        raise StoredDecompositionError(f"tensor {key!r} is {val.dtype}, expected {dtype}")
    numel = 1
    for d in shape:
        if not isinstance(d, int) or d < 0:
            raise StoredDecompositionError(f"tensor {key!r} has a bad shape {shape!r}")
        numel *= d
    if idx.dtype != torch.int32 or idx.dim() != 1 or val.shape != idx.shape:
        raise StoredDecompositionError(f"tensor {key!r}: index and values do not match")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= numel):
        raise StoredDecompositionError(f"tensor {key!r}: an index lies outside the shape {shape}")
    out = torch.zeros(numel, dtype=dtype)
    out[idx.long()] = val
    return out.reshape(shape)


_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.int32: "I32"}


def _save(tensors: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors format, written deterministically (tensors and header keys in sorted order), so the same
    decomposition always gives the same bytes and SHA-256. Read back with the safetensors library."""
    header: dict[str, Any] = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        blob = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return len(head).to_bytes(8, "little") + head + b"".join(blobs)


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's ``__metadata__`` (read as JSON, never executed)."""
    if len(data) < 8:
        raise ValueError("file too short")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError("header length out of range")
    header = json.loads(data[8 : 8 + n])
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("metadata must map strings to strings")
    return meta


def _numel(shape: Any) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _stored_numel(v: Tensor | LowRank) -> int:
    if isinstance(v, LowRank):
        return min(v.left.numel() + v.right.numel(), _numel(v.shape))
    return v.numel()
