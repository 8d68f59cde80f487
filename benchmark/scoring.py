"""Scoring a decomposition against a toy model's ground truth (docs/design.md, Scoring; docs/metrics.md).

:class:`ComponentSpace` holds what every metric shares, computed once per (toy model, decomposition): the
components and mechanisms flattened over the decomposed parameters, their projections, the evaluation
inputs and each component's activity on them. A partition of the components into *units* (a unit's
components summed form one mechanism's weight) gives a :class:`ScoringContext`: its ``cosines`` (the
credit of each live unit for each mechanism), the one-to-one ``matching`` and ``unit_active``.

Which partition is scored is the *grouping level* (:mod:`benchmark.grouping`): the headline level groups
components by co-activation with a swept threshold, the same rule for every method; the raw, own and
oracle-grouped levels are reported beside it. A metric is a registered :class:`Metric` whose function
takes a context and returns a float, or None where it does not apply (N/A); ``grouped`` metrics are
averaged over the sweep. Metrics never see the method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from benchmark import grouping
from benchmark.decomposition import Decomposition, DecompositionError, flatten
from benchmark.registry import METRICS
from benchmark.toy import ToyModel

T = TypeVar("T")
EVAL_SEED = 20250101  # inputs used by input-dependent metrics; fixed so scores are reproducible
EVAL_BATCH = 1024
DEAD_TOL = 1e-3  # a unit with norm below DEAD_TOL * (largest unit norm) is negligible ("dead")
ACTIVE_TOL = 0.1  # a component is active on an input when its attribution exceeds ACTIVE_TOL * (batch max)
REFINE_TOL = 0.9  # |cos| with a declared refinement piece at which a unit counts as that piece
BOUNDS_SLACK = 1e-9  # float rounding allowed outside a metric's bounds
HEADLINE = "hungarian"  # the one score per (toy model, method); see docs/metrics.md, "Headline"


@dataclass(frozen=True)
class Metric:
    name: str
    version: str
    higher_is_better: bool
    description: str
    fn: Callable[[ScoringContext], float | None]
    ideal: float | None = None  # where set, the best value (closer is better, e.g. ML2R = 1)
    bounds: tuple[float | None, float | None] = (None, None)  # the values it can take (None: unbounded)
    grouped: bool = True  # reads units: averaged over the engine's grouping sweep (else: raw components)

    def in_bounds(self, value: float) -> bool:
        lo, hi = self.bounds
        return (lo is None or value >= lo - BOUNDS_SLACK) and (hi is None or value <= hi + BOUNDS_SLACK)


def _metric_kind(name: str, obj: object) -> None:
    if not isinstance(obj, Metric):
        raise TypeError(f"{obj!r} is not a benchmark.scoring.Metric (register metrics with @metric)")


METRICS.check = _metric_kind


def metric(
    name: str,
    *,
    version: str,
    higher_is_better: bool,
    description: str,
    ideal: float | None = None,
    bounds: tuple[float | None, float | None] = (None, None),
    grouped: bool = True,
):
    """Decorator: register ``fn(ctx) -> float | None`` as a metric whose values lie within ``bounds``;
    ``grouped=False`` for metrics of the raw components (or that choose their own grouping level)."""

    def wrap(fn: Callable[[ScoringContext], float | None]) -> Callable[[ScoringContext], float | None]:
        METRICS.register(name, Metric(name, version, higher_is_better, description, fn, ideal, bounds, grouped))
        return fn

    return wrap


class _Memo:
    """``cached(key, fn)``: ``fn()`` computed once per object and kept under ``key``, how metrics share private
    intermediate results (several metrics read one matching's activity counts, say)."""

    _cache: dict[Hashable, Any]

    def cached(self, key: Hashable, fn: Callable[[], T]) -> T:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]


class ComponentSpace(_Memo):
    """What every grouping level shares for one (built toy model, decomposition): the components and
    mechanisms in the flattened parameter space, their projections, the evaluation inputs and the
    components' activity. :meth:`view` turns a partition of the components into a :class:`ScoringContext`."""

    def __init__(self, toy: ToyModel, decomposition: Decomposition, eval_batch: int = EVAL_BATCH):
        self.toy = toy
        self.decomposition = decomposition
        self.names = toy.spec.decomposed
        self.shapes = toy.param_shapes()
        self.mechanisms = toy.ground_truth.mechanisms
        self.eval_batch = eval_batch
        self._cache: dict[Hashable, Any] = {}
        self._views: dict[tuple[tuple[int, ...], ...], ScoringContext] = {}
        decomposition.validate(self.shapes)

    # -- parameter space ------------------------------------------------------------------------------
    @cached_property
    def components(self) -> Tensor:
        """``[C, D]`` float64: every component, flattened over the decomposed parameters."""
        return self.decomposition.flat(self.names, self.shapes)

    @cached_property
    def weights(self) -> Tensor:
        """``[D]`` float64: the decomposed parameters themselves."""
        named = dict(self.toy.model.named_parameters())
        return torch.cat([named[n].detach().to("cpu", torch.float64).reshape(-1) for n in self.names])

    @cached_property
    def bases(self) -> list[Tensor]:
        """One orthonormal ``[k_m, D]`` basis per mechanism: its normalised exact component (k = 1), or a
        basis of its subspace where only the span is defined."""
        return [m.basis(self.names, self.shapes) for m in self.mechanisms]

    @cached_property
    def span_only(self) -> Tensor:
        """``[M]`` bool: mechanisms defined by a span alone (scored by coverage and purity)."""
        return torch.tensor([m.components is None for m in self.mechanisms], dtype=torch.bool)

    @cached_property
    def masses(self) -> Tensor:
        """``[M]``: each mechanism's weight in mass-weighted metrics, ||z_m||^2, or 1 for every mechanism
        where some mechanism is defined by a span alone."""
        if bool(self.span_only.any()) or not self.mechanisms:
            return torch.ones(len(self.mechanisms), dtype=torch.float64)
        comps = [m.components or {} for m in self.mechanisms]
        return torch.stack(
            [flatten({k: v.unsqueeze(0) for k, v in c.items()}, self.names, self.shapes, 1).pow(2).sum() for c in comps]
        )

    @cached_property
    def supports(self) -> Tensor:
        """``[M, D]`` bool: each mechanism's support mask, flattened."""
        if not self.mechanisms:
            return torch.zeros(0, self.components.shape[1], dtype=torch.bool)
        return torch.stack([m.support_flat(self.names, self.shapes) for m in self.mechanisms])

    @cached_property
    def support_cols(self) -> list[Tensor | None]:
        """Per mechanism, the flattened indices inside its support, or None where the support covers more
        than a quarter of the space (then whole vectors are used: cheaper than gathering)."""
        return [_cols_or_none(self.supports[m]) for m in range(len(self.mechanisms))]

    @cached_property
    def basis_cols(self) -> list[Tensor | None]:
        """Per mechanism, the flattened indices where its basis is non-zero (None: a quarter or more)."""
        return [_cols_or_none(b.ne(0).any(dim=0)) for b in self.bases]

    @cached_property
    def basis_owner(self) -> Tensor:
        """``[K]``: the mechanism each row of ``projections`` belongs to."""
        return (
            torch.cat([torch.full((b.shape[0],), m) for m, b in enumerate(self.bases)])
            if self.bases
            else torch.zeros(0, dtype=torch.long)
        )

    def project(self, vecs: Tensor) -> Tensor:
        """``[K, N]``: coordinates of ``vecs [N, D]`` along every mechanism basis row (the bases stacked).
        Mechanisms with small bases are multiplied over their non-zero columns only."""
        if not self.bases:
            return torch.zeros(0, vecs.shape[0], dtype=torch.float64)
        rows: list[Tensor | None] = [None] * len(self.bases)
        dense = [m for m, cols in enumerate(self.basis_cols) if cols is None]
        if dense:
            prod = torch.cat([self.bases[m] for m in dense]) @ vecs.T
            for m, part in zip(dense, prod.split([self.bases[m].shape[0] for m in dense]), strict=True):
                rows[m] = part
        for m, cols in enumerate(self.basis_cols):
            if cols is not None:
                rows[m] = self.bases[m][:, cols] @ vecs[:, cols].T
        return torch.cat([r for r in rows if r is not None])

    @cached_property
    def component_projections(self) -> Tensor:
        """``[K, C]``: every component's coordinates along the mechanism bases (a unit's are the sum of its
        components')."""
        return self.project(self.components)

    @cached_property
    def gram(self) -> Tensor:
        """``[C, C]``: inner products between the components."""
        return self.components @ self.components.T

    @cached_property
    def pieces(self) -> tuple[Tensor, Tensor]:
        """(``[P, C]`` |cosine|-ready dot products of each declared refinement piece, normalised, with every
        component; ``[P]`` the mechanism each piece refines). Empty where no mechanism declares one."""
        flat, owner = [], []
        for m, mech in enumerate(self.mechanisms):
            for piece in mech.refinement or []:
                v = flatten({k: t.unsqueeze(0) for k, t in piece.items()}, self.names, self.shapes, 1)[0]
                flat.append(v / v.norm().clamp_min(1e-300))
                owner.append(m)
        if not flat:
            return torch.zeros(0, len(self.decomposition), dtype=torch.float64), torch.zeros(0, dtype=torch.long)
        return torch.stack(flat) @ self.components.T, torch.tensor(owner)

    @cached_property
    def component_support_sq(self) -> Tensor:
        """``[M, C]``: squared norm of every component inside each mechanism's support."""
        return support_sq_norms(self, self.components)

    def basis_gram(self, m1: int, m2: int) -> Tensor:
        """``[k1, k2]``: inner products between the basis rows of two mechanisms."""
        return self.bases[m1] @ self.bases[m2].T

    # -- input space ----------------------------------------------------------------------------------
    @cached_property
    def eval_inputs(self) -> Tensor:
        return eval_inputs(self.toy, self.eval_batch)

    @cached_property
    def true_active(self) -> Tensor:
        """``[B, M]`` bool: which mechanisms each eval input uses (the toy model's ``active``)."""
        a = self.toy.ground_truth.active(self.eval_inputs)
        expect = (self.eval_inputs.shape[0], len(self.mechanisms))
        if tuple(a.shape) != expect:
            raise ValueError(
                f"toy model {self.toy.spec.name}: active() returned shape {tuple(a.shape)}, expected {expect}"
            )
        return a.bool().cpu()

    @cached_property
    def attributions(self) -> Tensor | None:
        """``[B, C]`` float64 |attribution| on the eval inputs, or None where the method gives none."""
        return self.decomposition.attributions_on(self.eval_inputs)

    @cached_property
    def component_active(self) -> Tensor | None:
        """``[B, C]`` bool: attribution above ACTIVE_TOL x its largest value over the eval batch."""
        a = self.attributions
        if a is None:
            return None
        top = float(a.max()) if a.numel() else 0.0
        if top == 0.0:
            return torch.zeros_like(a, dtype=torch.bool)
        return a > ACTIVE_TOL * top

    # -- grouping levels (docs/metrics.md, "Grouping levels") -----------------------------------------
    def view(self, partition: list[list[int]]) -> ScoringContext:
        """The context whose units are ``partition``'s parts, after joining the pieces of any declared
        refinement; one per distinct partition."""
        key = tuple(sorted(tuple(sorted(p)) for p in partition if p))
        if key not in self._views:
            ctx = ScoringContext(self, [list(p) for p in key])
            joined = ctx.refinement_joined()
            self._views[key] = ctx if joined is None else ScoringContext(self, joined)
        return self._views[key]

    @cached_property
    def raw(self) -> ScoringContext:
        """Level 1: every component on its own."""
        return self.view(grouping.singletons(len(self.decomposition)))

    @cached_property
    def own(self) -> ScoringContext:
        """The method's own groups (each a unit), every other component alone."""
        groups = [list(g) for g in (self.decomposition.groups or []) if len(g) > 0]
        seen = {i for g in groups for i in g}
        if len(seen) != sum(len(g) for g in groups):
            raise DecompositionError("groups overlap: a component may belong to at most one group")
        return self.view(groups + [[i] for i in range(len(self.decomposition)) if i not in seen])

    @cached_property
    def engine(self) -> list[tuple[float, ScoringContext]]:
        """Level 2: (weight, context) per distinct co-activation partition over the Jaccard sweep
        ``grouping.SWEEP``. A method without attributions has nothing to co-activate: it is scored raw."""
        active = self.component_active
        if active is None:
            return [(1.0, self.raw)]
        weights: dict[int, float] = {}
        views: dict[int, ScoringContext] = {}
        for tau in grouping.SWEEP:
            ctx = self.view(grouping.coactivation_groups(active, tau))
            weights[id(ctx)] = weights.get(id(ctx), 0.0) + 1.0 / len(grouping.SWEEP)
            views[id(ctx)] = ctx
        return [(weights[k], views[k]) for k in views]

    @cached_property
    def oracle_grouped(self) -> ScoringContext:
        """Diagnostic: per mechanism, the components closest to it (best credit first) joined greedily while
        each one raises the unit's credit for that mechanism (greedy, so not a strict upper bound)."""
        single = ScoringContext(self, grouping.singletons(len(self.decomposition)))
        if not self.mechanisms:
            return single
        cos = single.cosines
        best = cos.argmax(dim=0)
        parts: list[list[int]] = []
        for m in range(len(self.mechanisms)):
            cands = [c for c in torch.argsort(cos[m], descending=True).tolist() if best[c] == m and cos[m, c] > 0]
            unit: list[int] = []
            score = 0.0
            for c in cands:
                trial = self.credit(m, unit + [c])
                if trial > score:
                    unit, score = unit + [c], trial
            if unit:
                parts.append(unit)
        used = {c for p in parts for c in p}
        return self.view(parts + [[c] for c in range(len(self.decomposition)) if c not in used])

    def credit(self, m: int, idx: list[int]) -> float:
        """The credit (``ScoringContext.cosines``) of the unit made of components ``idx`` for mechanism ``m``,
        from the components' Gram matrix and projections alone (no vector of the parameter space is formed)."""
        norm2 = float(self.gram[idx][:, idx].sum())
        along = torch.zeros(len(self.mechanisms), dtype=torch.float64)
        along.index_add_(0, self.basis_owner, self.component_projections[:, idx].sum(dim=1).pow(2))
        purity = along[:, None] / norm2 if norm2 > 0 else torch.zeros(len(self.mechanisms), 1, dtype=torch.float64)
        as_span = len(idx) > 1 and not self.decomposition.faithful
        overlap, rank = self.span_overlap(idx) if as_span or bool(self.span_only[m]) else (None, 1.0)
        sq = self.credit_sq(
            purity,
            None if overlap is None else overlap[:, None],
            torch.tensor([rank], dtype=torch.float64),
            torch.tensor([as_span]),
        )
        return float(sq[m, 0]) ** 0.5

    def span_overlap(self, idx: list[int]) -> tuple[Tensor, float]:
        """(``[M]`` ||P_U B_m||_F^2, rank of U), with U the span of components ``idx``; computed once per set
        of components (the engine's views share most of their units). Do not modify the tensor returned."""

        def overlap() -> tuple[Tensor, float]:
            if len(idx) == 1 and float(self.gram[idx[0], idx[0]]) > 0:  # the batched values: the same numbers
                return self.single_overlaps[:, idx[0]], 1.0
            return self._span_overlap(idx)

        return self.cached(("span_overlap", tuple(idx)), overlap)

    def span_basis(self, idx: list[int]) -> Tensor:
        """``[r, D]``: an orthonormal basis of the span of components ``idx`` (from their SVD, singular values
        above 1e-10 of the largest), computed once per set of components. Do not modify it."""

        def basis() -> Tensor:
            vecs = self.components[idx]
            vecs = vecs[vecs.norm(dim=1) > 0]
            left, sing, _ = torch.linalg.svd(vecs.T, full_matrices=False)
            return left[:, sing > 1e-10 * sing.max()].T

        return self.cached(("span_basis", tuple(idx)), basis)

    @cached_property
    def single_overlaps(self) -> Tensor:
        """``[M, C]``: :meth:`span_overlap` of each component alone, for all at once (a 1 x 1 Gram matrix's
        eigenvalue is its entry and its eigenvector 1, so each value is computed as the general case does)."""
        inv = 1.0 / self.gram.diagonal().abs().sqrt()  # v / sqrt|w| with v = 1
        p = self.component_projections * inv[None, :]
        out = torch.zeros(len(self.mechanisms), p.shape[1], dtype=torch.float64)
        return out.index_add_(0, self.basis_owner, p.pow(2))

    def _span_overlap(self, idx: list[int]) -> tuple[Tensor, float]:
        overlap = torch.zeros(len(self.mechanisms), dtype=torch.float64)
        g = self.gram[idx][:, idx]
        if float(g.diagonal().max()) <= 0:
            return overlap, 1.0
        w, v = torch.linalg.eigh(g)  # one eigendecomposition for both the pseudo-inverse and the rank
        keep = w.abs() > 1e-10 * w.abs().max()
        vk = v[:, keep] / w[keep].abs().sqrt()
        sign = w[keep].sign()
        p = self.component_projections[:, idx] @ vk  # [K, rank]: p G^+ p^T = sum_j sign_j (p v_j / sqrt|w_j|)^2
        return overlap.index_add_(0, self.basis_owner, (p.pow(2) * sign).sum(dim=1)), float(keep.sum())

    def credit_sq(self, purity: Tensor, overlap: Tensor | None, rank: Tensor, as_span: Tensor) -> Tensor:
        """``[M, U]`` squared credit from each unit's purity (its summed vector's share along the mechanism),
        its span overlap ``||P_U B_m||_F^2`` and rank (needed where a mechanism is a span only, or a unit is
        taken as its span: ``as_span``), as ``ScoringContext.cosines`` defines it."""
        out = purity.clone()
        if overlap is not None:
            k = torch.tensor([b.shape[0] for b in self.bases], dtype=torch.float64)[:, None]
            spans = self.span_only
            out[spans] = torch.minimum(out[spans], (overlap / k)[spans])
            out[:, as_span] = (overlap / torch.maximum(k, rank[None, :]))[:, as_span]
        return out.clamp(0.0, 1.0)

    def evaluate(self, metric: Metric) -> float | None:
        """The metric at the headline level: averaged over the engine sweep where it reads units, on the raw
        components otherwise; None (N/A) where it applies at no threshold."""
        if not metric.grouped:
            return metric.fn(self.raw)
        total, weight = 0.0, 0.0
        for w, ctx in self.engine:
            v = metric.fn(ctx)
            if v is not None:
                total, weight = total + w * float(v), weight + w
        return total / weight if weight > 0 else None


class ScoringContext(_Memo):
    """One partition of the components into *units* (a unit's components summed form one mechanism's
    weight) and what every metric reads from it; shared quantities come from its :class:`ComponentSpace`
    (attribute lookups that fail here are forwarded there)."""

    def __init__(self, space: ComponentSpace, partition: list[list[int]]):
        self.space = space
        self.units = partition
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name == "space":
            raise AttributeError(name)
        return getattr(self.space, name)

    @cached_property
    def membership(self) -> Tensor:
        """``[U, C]`` float64: 1 where component c belongs to unit u."""
        m = torch.zeros(len(self.units), len(self.decomposition), dtype=torch.float64)
        for u, idx in enumerate(self.units):
            m[u, idx] = 1.0
        return m

    @cached_property
    def unit_vectors(self) -> Tensor:
        """``[U, D]``: each unit's components summed."""
        if all(len(u) == 1 for u in self.units):
            return self.components[[u[0] for u in self.units]]
        members = torch.tensor([i for idx in self.units for i in idx], dtype=torch.long)
        owner = torch.tensor([u for u, idx in enumerate(self.units) for _ in idx], dtype=torch.long)
        out = torch.zeros(len(self.units), self.components.shape[1], dtype=torch.float64)
        return out.index_add_(0, owner, self.components[members])

    @cached_property
    def unit_norms(self) -> Tensor:
        return self.unit_vectors.norm(dim=1)

    @cached_property
    def live(self) -> Tensor:
        """``[U]`` bool: units with non-negligible norm (>= DEAD_TOL x the largest, and > 0)."""
        n = self.unit_norms
        top = float(n.max()) if n.numel() else 0.0
        return (n > 0) & (n >= DEAD_TOL * top)

    @cached_property
    def projections(self) -> Tensor:
        """``[K, U]``: each unit's coordinates along every mechanism basis row."""
        return self.component_projections @ self.membership.T

    def support_sq_norms(self, which: str) -> Tensor:
        """``[M, N]``: squared norm inside each mechanism's support of every component (``which`` =
        "components") or unit ("units")."""
        if which == "components":
            return self.space.component_support_sq
        return self.cached("support_sq_units", lambda: support_sq_norms(self.space, self.unit_vectors))

    @cached_property
    def cosines(self) -> Tensor:
        """``[M, U]``: the credit of live unit u for mechanism m (0 for dead units); invariant to the sign
        and scale of u.

        The credit is sqrt(min(coverage, purity)), both shares of parameter mass. For a single component,
        or a unit of a faithful decomposition (its components claim to sum to the weights, so the unit is
        their sum u): purity = ||P_m u||^2 / ||u||^2, the share of u along the mechanism (its exact
        component z_m, or its span where only a span is defined); coverage = purity for an exact
        mechanism (so the credit is |cos(u, z_m)|), and ||P_U B_m||_F^2 / k for a rank-k span, with U the
        span of the unit's components. For a unit of several components without that claim (their scales
        and signs mean nothing, so their sum means nothing) the unit is the span U itself: with overlap =
        ||P_U B_m||_F^2, coverage = overlap / k and purity = overlap / rank(U). A rank-1 sliver of a rank-k
        span scores sqrt(1/k); a random vector about sqrt(k / D) / sqrt(k).
        """
        norms = self.unit_norms
        if not self.bases:
            return torch.zeros(0, len(norms), dtype=torch.float64)
        purity = self.along_sq / norms.pow(2).clamp_min(1e-300)  # of the summed unit
        as_span = self.as_span
        overlap, rank = None, torch.ones(len(self.units), dtype=torch.float64)
        if bool(self.span_only.any()) or bool(as_span.any()):
            pairs = [self.span_overlap(idx) for idx in self.units]
            overlap = torch.stack([o for o, _ in pairs], dim=1)
            rank = torch.tensor([r for _, r in pairs], dtype=torch.float64)
        cos = self.credit_sq(purity, overlap, rank, as_span).sqrt()
        cos[:, ~self.live] = 0.0
        return cos

    @cached_property
    def as_span(self) -> Tensor:
        """``[U]`` bool: units taken as the span of their components (several components, and no claim that
        they sum to the weights, so their sum means nothing)."""
        multi = torch.tensor([len(idx) > 1 for idx in self.units], dtype=torch.bool)
        return multi & (not self.decomposition.faithful)

    @cached_property
    def along_sq(self) -> Tensor:
        """``[M, U]``: each unit's squared norm along each mechanism (its basis rows' projections summed)."""
        sq = torch.zeros(len(self.bases), len(self.units), dtype=torch.float64)
        return sq.index_add_(0, self.basis_owner, self.projections.pow(2))

    @cached_property
    def matching(self) -> list[tuple[int, int]]:
        """One-to-one (mechanism, unit) pairs maximising the total credit (Hungarian algorithm)."""
        cos = self.cosines.numpy()
        if cos.size == 0:
            return []
        rows, cols = linear_sum_assignment(cos, maximize=True)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if self.live[c]]

    def refinement_joined(self) -> list[list[int]] | None:
        """This partition with the units that are a mechanism's declared refinement pieces joined into one
        unit per mechanism; None where nothing joins. A live unit is taken as a piece where its |cosine|
        with the piece is at least ``REFINE_TOL`` and above its credit for every mechanism (so a whole
        mechanism, or a copy of one, is never a piece); pieces and units are matched one to one."""
        dots, owner = self.pieces
        if dots.numel() == 0 or not bool(self.live.any()):
            return None
        pcos = (dots @ self.membership.T).abs() / self.unit_norms.clamp_min(1e-300)[None, :]
        pcos[:, ~self.live] = 0.0
        best_mech = self.cosines.max(dim=0).values
        joined: list[list[int]] = []
        taken: set[int] = set()
        for m in owner.unique().tolist():
            rows = torch.nonzero(owner == m).flatten()
            sub = pcos[rows] * (pcos[rows] >= REFINE_TOL) * (pcos[rows] > best_mech[None, :] + 1e-12)
            r, c = linear_sum_assignment(sub.numpy(), maximize=True)
            units = [int(u) for p, u in zip(r, c, strict=True) if sub[p, u] > 0 and int(u) not in taken]
            if len(units) >= 2:
                joined.append(units)
                taken.update(units)
        if not joined:
            return None
        merged = [[i for u in group for i in self.units[u]] for group in joined]
        return merged + [self.units[u] for u in range(len(self.units)) if u not in taken]

    @cached_property
    def unit_active(self) -> Tensor | None:
        """``[B, U]`` bool: a unit is active when any of its components is."""
        ca = self.component_active
        if ca is None:
            return None
        return (ca.to(torch.float64) @ self.membership.T) > 0


def support_sq_norms(space: ComponentSpace, vecs: Tensor) -> Tensor:
    """``[M, N]``: squared norm of each of ``vecs [N, D]`` inside every mechanism's support; computed once
    per distinct support mask."""
    sq = vecs.pow(2)
    out = torch.zeros(len(space.mechanisms), vecs.shape[0], dtype=torch.float64)
    distinct: dict[bytes, list[int]] = {}
    for m in range(len(space.mechanisms)):
        distinct.setdefault(space.supports[m].numpy().tobytes(), []).append(m)
    for ms in distinct.values():
        cols = space.support_cols[ms[0]]
        out[ms] = sq @ space.supports[ms[0]].to(torch.float64) if cols is None else sq[:, cols].sum(dim=1)
    return out


def eval_inputs(toy: ToyModel, n: int = EVAL_BATCH) -> Tensor:
    """The fixed evaluation inputs of a toy model (``EVAL_SEED``): attributions are stored for these."""
    return toy.sample(n, torch.Generator().manual_seed(EVAL_SEED))


def _cols_or_none(mask: Tensor) -> Tensor | None:
    cols = torch.nonzero(mask).flatten()
    return None if len(cols) * 4 >= mask.numel() else cols


def score(toy: ToyModel, decomposition: Decomposition, names: list[str] | None = None) -> dict[str, float | None]:
    """Every registered metric (or those in ``names``) on one decomposition; None means N/A."""
    space = ComponentSpace(toy, decomposition)
    out: dict[str, float | None] = {}
    for name in names or METRICS.names():
        v = space.evaluate(METRICS.get(name))
        if v is not None and not math.isfinite(float(v)):
            raise ValueError(f"metric {name} returned {v} on {toy.spec.name}")
        out[name] = None if v is None else float(v)
    return out


def metric_versions(names: list[str] | None = None) -> dict[str, str]:
    return {n: METRICS.get(n).version for n in names or METRICS.names()}


def f_score(precision: float | None, recall: float | None) -> float | None:
    """The harmonic mean of a precision and a recall (0 where both are 0); None where either is N/A."""
    if precision is None or recall is None:
        return None
    total = precision + recall
    return 2 * precision * recall / total if total else 0.0


def mean_or_none(values: list[float] | np.ndarray) -> float | None:
    """The mean, or None (N/A) for an empty list."""
    return float(np.mean(values)) if len(values) else None
