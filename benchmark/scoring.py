"""Scoring a decomposition against a toy model's ground truth (docs/design.md, Scoring; docs/metrics.md).

:class:`ScoringContext` holds what every metric shares, computed once per (toy model, decomposition):

- *units*: the decomposition's groups (a group's components summed: together they form one mechanism's
  weight) plus every ungrouped component on its own; ``unit_vectors`` is ``[U, D]`` in the flattened
  decomposed-parameter space;
- *live* units: those whose norm is at least ``DEAD_TOL`` times the largest unit norm (negligible
  components, e.g. SPD's unused subcomponents, are set aside, as the SPD paper does);
- ``cosines``: ``[M, U]`` |cosine| between mechanisms and live units (principal angle for subspaces);
- ``matching``: the one-to-one Hungarian matching of mechanisms to live units on that matrix;
- ``eval_inputs`` and ``unit_active`` for the input-dependent metrics.

A metric is a registered :class:`Metric` whose function takes the context and returns a float, or None
where it does not apply (N/A). Metrics never see the method.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from benchmark.decomposition import Decomposition, DecompositionError
from benchmark.registry import METRICS
from benchmark.toy import ToyModel

T = TypeVar("T")
EVAL_SEED = 20250101  # inputs used by input-dependent metrics; fixed so scores are reproducible
EVAL_BATCH = 1024
DEAD_TOL = 1e-3  # a unit with norm below DEAD_TOL * (largest unit norm) is negligible ("dead")
ACTIVE_TOL = 0.1  # a component is active on an input when its attribution exceeds ACTIVE_TOL * (batch max)
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
):
    """Decorator: register ``fn(ctx) -> float | None`` as a metric whose values lie within ``bounds``."""

    def wrap(fn: Callable[[ScoringContext], float | None]) -> Callable[[ScoringContext], float | None]:
        METRICS.register(name, Metric(name, version, higher_is_better, description, fn, ideal, bounds))
        return fn

    return wrap


class ScoringContext:
    """Shared, cached quantities for scoring one decomposition of one built toy model."""

    def __init__(self, toy: ToyModel, decomposition: Decomposition, eval_batch: int = EVAL_BATCH):
        self.toy = toy
        self.decomposition = decomposition
        self.names = toy.spec.decomposed
        self.shapes = toy.param_shapes()
        self.mechanisms = toy.ground_truth.mechanisms
        self.eval_batch = eval_batch
        self._cache: dict[str, Any] = {}
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
    def units(self) -> list[list[int]]:
        """Component indices of each unit: the groups, then every ungrouped component alone."""
        groups = [list(g) for g in (self.decomposition.groups or []) if len(g) > 0]
        seen = {i for g in groups for i in g}
        if len(seen) != sum(len(g) for g in groups):
            raise DecompositionError("groups overlap: a component may belong to at most one group")
        return groups + [[i] for i in range(len(self.decomposition)) if i not in seen]

    @cached_property
    def membership(self) -> Tensor:
        """``[U, C]`` float64: 1 where component c belongs to unit u."""
        m = torch.zeros(len(self.units), self.components.shape[0], dtype=torch.float64)
        for u, idx in enumerate(self.units):
            m[u, idx] = 1.0
        return m

    @cached_property
    def unit_vectors(self) -> Tensor:
        """``[U, D]``: each unit's components summed (the components themselves when there are no groups)."""
        if all(len(u) == 1 for u in self.units) and [u[0] for u in self.units] == list(range(len(self.units))):
            return self.components
        owner = torch.empty(self.components.shape[0], dtype=torch.long)
        for u, idx in enumerate(self.units):
            owner[idx] = u
        out = torch.zeros(len(self.units), self.components.shape[1], dtype=torch.float64)
        return out.index_add_(0, owner, self.components)

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
    def bases(self) -> list[Tensor]:
        """One orthonormal ``[k_m, D]`` basis per mechanism."""
        return [m.basis(self.names, self.shapes) for m in self.mechanisms]

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

    @cached_property
    def projections(self) -> Tensor:
        """``[K, U]``: each unit's coordinates along every mechanism basis row (the bases stacked).

        Mechanisms with small bases are multiplied over their non-zero columns only; the others in one
        matrix product, so the cost follows the mechanisms' sizes."""
        vecs = self.unit_vectors
        if not self.bases:
            return torch.zeros(0, len(self.units), dtype=torch.float64)
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

    def support_sq_norms(self, which: str) -> Tensor:
        """``[M, N]``: squared norm inside each mechanism's support of every component (``which`` =
        "components") or unit ("units"); computed once per distinct support mask."""
        return self.cached(f"support_sq_{which}", lambda: self._support_sq_norms(which))

    def _support_sq_norms(self, which: str) -> Tensor:
        vecs = {"components": self.components, "units": self.unit_vectors}[which]
        sq = vecs.pow(2)
        out = torch.zeros(len(self.mechanisms), vecs.shape[0], dtype=torch.float64)
        distinct: dict[bytes, list[int]] = {}
        for m in range(len(self.mechanisms)):
            distinct.setdefault(self.supports[m].numpy().tobytes(), []).append(m)
        for ms in distinct.values():
            cols = self.support_cols[ms[0]]
            out[ms] = sq @ self.supports[ms[0]].to(torch.float64) if cols is None else sq[:, cols].sum(dim=1)
        return out

    def cached(self, key: str, fn: Callable[[], T]) -> T:
        """``fn()`` computed once per context and kept under ``key``: how metrics share private intermediate
        results (several metrics read one matching's activity counts, say)."""
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def basis_gram(self, m1: int, m2: int) -> Tensor:
        """``[k1, k2]``: inner products between the basis rows of two mechanisms."""
        return self.bases[m1] @ self.bases[m2].T

    @cached_property
    def cosines(self) -> Tensor:
        """``[M, U]``: |cos| of the angle between live unit u and mechanism m's span (0 for dead units).

        For a rank-1 mechanism this is |cos(u, z_m)|; for a subspace it is the cosine of the principal
        angle between u and the subspace, ``||B_m u|| / ||u||``. Invariant to sign and scale of u.
        """
        norms = self.unit_norms
        if not self.bases:
            return torch.zeros(0, len(norms), dtype=torch.float64)
        sq = torch.zeros(len(self.bases), len(norms), dtype=torch.float64)
        sq.index_add_(0, self.basis_owner, self.projections.pow(2))
        cos = sq.sqrt() / norms.clamp_min(1e-300)
        cos[:, ~self.live] = 0.0
        return cos.clamp(0.0, 1.0)

    @cached_property
    def matching(self) -> list[tuple[int, int]]:
        """One-to-one (mechanism, unit) pairs maximising the total |cosine| (Hungarian algorithm)."""
        cos = self.cosines.numpy()
        if cos.size == 0:
            return []
        rows, cols = linear_sum_assignment(cos, maximize=True)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if self.live[c]]

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

    @cached_property
    def unit_active(self) -> Tensor | None:
        """``[B, U]`` bool: a unit is active when any of its components is."""
        ca = self.component_active
        if ca is None:
            return None
        return (ca.to(torch.float64) @ self.membership.T) > 0


def eval_inputs(toy: ToyModel, n: int = EVAL_BATCH) -> Tensor:
    """The fixed evaluation inputs of a toy model (``EVAL_SEED``): attributions are stored for these."""
    return toy.sample(n, torch.Generator().manual_seed(EVAL_SEED))


def _cols_or_none(mask: Tensor) -> Tensor | None:
    cols = torch.nonzero(mask).flatten()
    return None if len(cols) * 4 >= mask.numel() else cols


def score(toy: ToyModel, decomposition: Decomposition, names: list[str] | None = None) -> dict[str, float | None]:
    """Every registered metric (or those in ``names``) on one decomposition; None means N/A."""
    ctx = ScoringContext(toy, decomposition)
    out: dict[str, float | None] = {}
    for name in names or METRICS.names():
        m = METRICS.get(name)
        v = m.fn(ctx)
        if v is not None and not math.isfinite(float(v)):
            raise ValueError(f"metric {name} returned {v} on {toy.spec.name}")
        out[name] = None if v is None else float(v)
    return out


def metric_versions(names: list[str] | None = None) -> dict[str, str]:
    return {n: METRICS.get(n).version for n in names or METRICS.names()}


def mean_or_none(values: list[float] | np.ndarray) -> float | None:
    """The mean, or None (N/A) for an empty list."""
    return float(np.mean(values)) if len(values) else None
