"""From an activation basis to rank-1 parameter components (``docs/reference/lib_pca.md`` 5.1).

For a weight used as z = W f (``W [d_out, d_in]``, transposed back where the forward pass uses W^T):
- *read side*, a basis of f: P_i = W write_i read_i^T. P_i f = W write_i (read_i^T f): the part of W's
  output that comes through feature i of its input. Sum_i P_i = W Pi, Pi the kept-subspace projection.
- *write side*, a basis of z: P_j = write_j read_j^T W: the part of W's output along output feature j.
  Its rank cap is visible: z = W f has at most rank(W) directions with variance.
The constant direction (the part of the data mean outside the variance span, always active) and the
residual W - sum P (directions with no data variance or, for LIB, no downstream effect; never active)
are kept as their own components when non-negligible, so that the components sum to W exactly. A
parameter used at k sites (tied weights) has every site's components scaled by 1/k, so the sum over all
components is still the parameter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from benchmark.decomposition import Component, Decomposition, LowRank, RunRecord
from benchmark.toy import per_input
from methods._activation_bases import Basis
from methods._attribution import gradient_attributions

Side = Literal["read", "write"]


@dataclass
class CompInfo:
    """What one component is: which site and feature it comes from, and how to read its activity."""

    site: int
    kind: str  # "feature" | "const" | "residual" | "unread" (a decomposed parameter no site reads)
    feature: int = -1
    side: Side = "read"


def site_components(
    param: str,
    weight: Tensor,
    transposed: bool,
    basis: Basis,
    side: Side,
    site: int,
    factor: float,
    dtype: torch.dtype,
    res_tol: float = 1e-9,
) -> tuple[list[Component], list[CompInfo]]:
    """Rank-1 components of one weight use from one basis, plus constant and residual components."""
    comps: list[Component] = []
    infos: list[CompInfo] = []

    def add(left: Tensor, right: Tensor, info: CompInfo) -> None:
        # left [d_out], right [d_in]: the component left right^T in the used orientation
        left, right = left * factor, right
        if transposed:
            left, right = right, left
        lr = LowRank(left.unsqueeze(1).to(dtype), right.unsqueeze(0).to(dtype))
        comps.append({param: lr})
        infos.append(info)

    total = torch.zeros_like(weight)
    for i in range(basis.rank):
        w, r = basis.write[:, i], basis.read[:, i]
        left, right = (weight @ w, r) if side == "read" else (w, weight.T @ r)
        if float(left.abs().max()) == 0 or float(right.abs().max()) == 0:
            continue  # the weight ignores this direction: an all-zero component
        add(left, right, CompInfo(site, "feature", i, side))
        total += torch.outer(left, right)
    if basis.const_read is not None:
        w, r = basis.const_write, basis.const_read
        left, right = (weight @ w, r) if side == "read" else (w, weight.T @ r)
        if float(left.abs().max()) > 0 and float(right.abs().max()) > 0:
            add(left, right, CompInfo(site, "const", -1, side))
            total += torch.outer(left, right)
    residual = weight - total
    if float(residual.norm()) > res_tol * float(weight.norm()):
        full = residual * factor
        comps.append({param: (full.T if transposed else full).to(dtype)})
        infos.append(CompInfo(site, "residual", -1, side))
    return comps, infos


def unread_components(params: dict[str, Tensor], read: set[str]) -> tuple[list[Component], list[CompInfo]]:
    """One whole-parameter component per decomposed parameter that no site reads (no basis can split it),
    so that the components still sum to the parameters."""
    names = [n for n in params if n not in read]
    return ([{n: params[n].detach().clone()} for n in names], [CompInfo(-1, "unread") for _ in names])


def use_counts(params: list[str]) -> Counter:
    """How many sites use each parameter (for the 1/k scaling of tied weights)."""
    return Counter(params)


def activity(infos: list[CompInfo], bases_by_site: dict[int, Basis], acts_by_site: dict[int, Tensor]) -> Tensor:
    """|feature activation| per component ``[batch, C]``: |f_hat_i| (centred: 0 at the data mean, i.e.
    mean-ablation semantics); 1 for constant and unread-parameter components (always on); 0 for residuals
    (never on)."""
    cols = []
    coords = {s: bases_by_site[s].coords(a) for s, a in acts_by_site.items()}
    batch = next(iter(acts_by_site.values())).shape[0]
    for info in infos:
        if info.kind == "feature":
            cols.append(coords[info.site][:, info.feature].abs())
        else:
            val = 1.0 if info.kind in ("const", "unread") else 0.0
            cols.append(torch.full((batch,), val, dtype=torch.float64))
    return torch.stack(cols, dim=1).float()


def capped_samples(target, n_samples: int, max_floats: float) -> int:
    """``n_samples``, lowered so that one node layer's activations hold at most ``max_floats`` numbers."""
    if not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, not {n_samples!r}")
    with torch.no_grad():
        probe = target.sites(target.sample(4, torch.Generator().manual_seed(0)))
    widest = max([s.inputs[0].numel() for s in probe] + [1])
    return max(2, min(n_samples, int(max_floats // widest)))


def per_site_decomposition(
    target,
    seed: int,
    n_samples: int,
    make_basis: Callable[[Tensor], Basis],
    side: Side,
    attribution: str,
    hparams: dict,
    max_per_site: int | None = None,
) -> Decomposition:
    """Read- or write-side components of every weight use from a basis fitted per site (PCA, neuron).

    ``make_basis`` gets the activations the basis lives in: the site's inputs f (read side) or its
    pre-activations z = W f (write side). Sites with equal activations share one basis. With
    ``max_per_site``, a site whose chosen side is wider than that uses the other side where it is narrower
    (recorded in ``record.extra["side_per_site"]``), which bounds the number of components.
    """
    if side not in ("read", "write"):
        raise ValueError(f"side must be 'read' or 'write', not {side!r}")
    if attribution not in ("activation", "gradient"):
        raise ValueError(f"attribution must be 'activation' or 'gradient', not {attribution!r}")
    x = target.sample(
        capped_samples(target, n_samples, hparams.get("max_floats", 1e7)), torch.Generator().manual_seed(seed)
    )
    params = target.params()
    with torch.no_grad():
        sites = target.sites(x)
    if not sites:
        raise ValueError("the target exposes no linear sites: activation-basis methods have nothing to read")
    counts = use_counts([s.param for s in sites])
    weights: dict[int, Tensor] = {}
    sides: dict[int, Side] = {}
    bases: dict[int, Basis] = {}
    cache: list[tuple[Tensor, Basis]] = []
    comps: list[Component] = []
    infos: list[CompInfo] = []
    caps: list[int] = []
    for s, site in enumerate(sites):
        if site.param not in params:
            raise ValueError(f"site {s} reads parameter {site.param!r}, which is not decomposed")
        W = params[site.param].detach().to("cpu", torch.float64)
        if W.ndim != 2:
            raise ValueError(f"site {s}: parameter {site.param!r} is not a matrix (shape {tuple(W.shape)})")
        W = W.T if site.transposed else W
        sides[s] = side
        other: Side = "write" if side == "read" else "read"
        width = {"read": W.shape[1], "write": W.shape[0]}
        if max_per_site is not None and width[side] > max_per_site and width[other] < width[side]:
            sides[s] = other
        acts = _site_acts(site, W, sides[s])
        basis = next((b for a, b in cache if a.shape == acts.shape and torch.equal(a, acts)), None)
        if basis is None:
            basis = make_basis(acts)
            cache.append((acts, basis))
        weights[s], bases[s] = W, basis
        c, i = site_components(
            site.param, W, site.transposed, basis, sides[s], s, 1.0 / counts[site.param], params[site.param].dtype
        )
        comps += c
        infos += i
        caps.append(int(torch.linalg.matrix_rank(W)))
    c, i = unread_components(params, set(counts))
    comps += c
    infos += i
    record = RunRecord(
        steps=0,
        hparams=hparams,
        extra={
            "features_per_site": [bases[s].rank for s in range(len(sites))],
            "weight_rank_per_site": caps,
            "side_per_site": [sides[s] for s in range(len(sites))],
            "kinds": [i.kind for i in infos],
        },
    )
    dec = Decomposition(comps, faithful=True, record=record)
    if attribution == "gradient":
        model, names = target.model, target.decomposed
        dec.attributions = lambda inp: gradient_attributions(model, dec, inp, names)
    else:

        def attributions(inputs: Tensor) -> Tensor:
            with torch.no_grad():
                new = target.sites(inputs)
            acts = {s: _site_acts(new[s], weights[s], sides[s]) for s in bases}
            return per_input(activity(infos, bases, acts), inputs.shape[0])

        dec.attributions = attributions
    return dec


def _site_acts(site, W: Tensor, side: Side) -> Tensor:
    f = site.inputs.detach().to("cpu", torch.float64).reshape(site.inputs.shape[0], -1)
    if not torch.isfinite(f).all():
        raise ValueError(f"site for {site.param!r} has NaN or infinite activations")
    if f.shape[1] != W.shape[1]:
        raise ValueError(f"{site.param} reads {W.shape[1]} inputs but its activations have {f.shape[1]}")
    return f if side == "read" else f @ W.T
