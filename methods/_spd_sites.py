"""Intercept every use of a decomposed weight in a network's forward pass (used by the ``spd`` adapter).

SPD (Bushnaq, Braun, Sharkey 2025, arXiv:2506.20790) needs two things from the target network: the
input ``a^l`` of each layer that uses a decomposed matrix, and a forward pass in which each such layer
is replaced by its masked subcomponents. The benchmark's ``Target`` exposes the network but not its
structure, so this module runs the network's own ``forward`` under a :class:`TorchFunctionMode` that
recognises the decomposed parameters by identity. Each use through ``a @ W``, ``a @ W.T`` or
``F.linear(a, W)`` is a *site*, numbered in the order of the forward pass; a site's output can be
recorded or replaced. Any other operation on a decomposed parameter raises a clear error rather than
silently computing with the original weight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode, resolve_name

_MATMUL = {"torch.matmul", "torch.Tensor.matmul", "torch.Tensor.__matmul__", "torch.mm", "torch.Tensor.mm"}
_TRANSPOSE = {"torch.Tensor.T.__get__", "torch.Tensor.mT.__get__", "torch.Tensor.t", "torch.t"}
_HARMLESS = {
    "torch.Tensor.shape.__get__",
    "torch.Tensor.dtype.__get__",
    "torch.Tensor.device.__get__",
    "torch.Tensor.requires_grad.__get__",
    "torch.Tensor.dim",
    "torch.Tensor.size",
    "torch.Tensor.ndim.__get__",
    "torch.Tensor.is_cuda.__get__",
}


@cache
def _func_name(func: Callable) -> str:
    """torch's name for ``func``, remembered: ``resolve_name`` sets up a warnings filter on every call (3 us, for
    every use of a decomposed matrix in every pass)."""
    return resolve_name(func) or repr(func)


@dataclass(frozen=True)
class Site:
    """One use of a decomposed matrix ``W``: ``out = a @ W.T`` (``transposed=False``) or ``a @ W``."""

    param: str
    transposed: bool
    d_in: int
    d_out: int


Replace = Callable[[int, Tensor], "Tensor | None"]  # (site index, input a) -> output, or None: keep W


class UnsupportedUse(RuntimeError):
    """A decomposed parameter is used by an operation other than a matrix product."""


class _SiteMode(TorchFunctionMode):
    def __init__(self, params: dict[str, Tensor], replace: Replace | None):
        super().__init__()
        self.tags: dict[int, tuple[str, bool]] = {id(t): (n, False) for n, t in params.items()}
        self.alive: list[Tensor] = []  # keeps tagged views alive so that their ids stay unique
        self.replace = replace
        self.sites: list[Site] = []
        self.inputs: list[Tensor] = []

    def _tag(self, x: object) -> tuple[str, bool] | None:
        return self.tags.get(id(x)) if isinstance(x, Tensor) else None

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        tagged = [i for i, a in enumerate(args) if self._tag(a) is not None]
        if not tagged and not any(self._tag(v) is not None for v in kwargs.values()):
            return func(*args, **kwargs)
        name = _func_name(func)
        if name in _HARMLESS:
            return func(*args, **kwargs)
        if name in _TRANSPOSE and tagged == [0]:
            param, tr = self._tag(args[0])  # type: ignore[misc]
            out = func(*args, **kwargs)
            self.tags[id(out)] = (param, not tr)
            self.alive.append(out)
            return out
        if name in _MATMUL and tagged == [1] and not kwargs:
            param, tr = self._tag(args[1])  # type: ignore[misc]
            return self._site(param, transposed=not tr, a=args[0], w=args[1], linear=False)
        if name == "torch.nn.functional.linear" and tagged == [1]:
            param, tr = self._tag(args[1])  # type: ignore[misc]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            out = self._site(param, transposed=tr, a=args[0], w=args[1], linear=True)
            return out if bias is None else out + bias
        raise UnsupportedUse(
            f"spd: decomposed parameter {self._tag(args[tagged[0]] if tagged else None)} is used by {name}; "
            "SPD replaces only matrix products a @ W, a @ W.T and F.linear(a, W) with subcomponents"
        )

    def _site(self, param: str, transposed: bool, a: Tensor, w: Tensor, linear: bool) -> Tensor:
        k = len(self.sites)
        shape = w.shape if linear else w.T.shape  # (d_out, d_in) of the map a -> out
        self.sites.append(Site(param, transposed, d_in=int(shape[1]), d_out=int(shape[0])))
        self.inputs.append(a)
        if a.dim() != 2:
            raise UnsupportedUse(f"spd: site {k} ({param}) reads a {a.dim()}-d input; only [batch, d] is supported")
        out = self.replace(k, a) if self.replace is not None else None
        if out is None:
            out = F.linear(a, w) if linear else a @ w
        return out


def run_sites(
    model: nn.Module, params: dict[str, Tensor], x: Tensor, replace: Replace | None = None
) -> tuple[Tensor, list[Site], list[Tensor]]:
    """Run ``model(x)``, replacing site outputs through ``replace``; return (output, sites, site inputs)."""
    mode = _SiteMode(params, replace)
    with mode:
        out = model(x)
    return out, mode.sites, mode.inputs


def decomposed_sites(model: nn.Module, params: dict[str, Tensor], probe: Tensor, who: str) -> list[Site]:
    """The sites of ``model`` on ``probe``, checked: every decomposed parameter is a matrix used by the forward
    pass, and some site exists (``who`` names the method in the errors)."""
    _, sites, _ = run_sites(model, params, probe)
    if not sites:
        raise RuntimeError(f"{who}: the network's forward pass uses none of the decomposed parameters")
    for n, p in params.items():
        if p.dim() != 2:
            raise ValueError(f"{who} decomposes matrices only; parameter {n!r} has shape {tuple(p.shape)}")
        if not any(s.param == n for s in sites):
            raise RuntimeError(f"{who}: decomposed parameter {n!r} is never used by the forward pass")
    return sites
