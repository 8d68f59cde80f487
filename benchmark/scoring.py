"""Scoring a decomposition against a toy model's ground truth.

:class:`ScoringContext` holds what every metric shares, computed once: the components flattened into
the decomposed parameters' space, each mechanism's orthonormal basis, and the |cosine| matrix between
mechanisms and components. A metric is a registered :class:`Metric` whose function takes the context
and returns a float, or None where it does not apply (N/A). Metrics never see the method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from benchmark.decomposition import Decomposition
from benchmark.registry import METRICS
from benchmark.toy import ToyModel

EVAL_SEED = 20250101  # inputs used by input-dependent metrics; fixed so scores are reproducible
EVAL_BATCH = 4096
HEADLINE = "hungarian"  # the one score per (toy model, method); see docs/metrics.md


@dataclass(frozen=True)
class Metric:
    name: str
    version: str
    higher_is_better: bool
    description: str
    fn: Callable[[ScoringContext], float | None]


def metric(name: str, *, version: str, higher_is_better: bool, description: str):
    """Decorator: register ``fn(ctx) -> float | None`` as a metric."""

    def wrap(fn: Callable[[ScoringContext], float | None]) -> Callable[[ScoringContext], float | None]:
        METRICS.register(name, Metric(name, version, higher_is_better, description, fn))
        return fn

    return wrap


class ScoringContext:
    def __init__(self, toy: ToyModel, decomposition: Decomposition):
        self.toy = toy
        self.decomposition = decomposition
        self.names = toy.spec.decomposed
        self.shapes = toy.param_shapes()
        self.mechanisms = toy.ground_truth.mechanisms

    @cached_property
    def components(self) -> Tensor:
        """``[C, D]`` float64."""
        return self.decomposition.flat(self.names, self.shapes)

    @cached_property
    def bases(self) -> list[Tensor]:
        """One orthonormal ``[k_m, D]`` basis per mechanism."""
        return [m.basis(self.names, self.shapes) for m in self.mechanisms]

    @cached_property
    def cosines(self) -> Tensor:
        """``[M, C]``: |cos| of the angle between component c and mechanism m's span.

        For a rank-1 mechanism this is |cos(c, z_m)|; for a subspace it is the cosine of the principal
        angle between c and the subspace, ``||B_m c|| / ||c||``. Invariant to sign and scale of c.
        """
        norms = self.components.norm(dim=1)
        safe = norms.clamp_min(1e-300)
        rows = [(b @ self.components.T).norm(dim=0) / safe for b in self.bases]
        cos = torch.stack(rows) if rows else torch.zeros(0, len(norms), dtype=torch.float64)
        cos[:, norms == 0] = 0.0
        return cos.clamp(0.0, 1.0)

    @cached_property
    def eval_inputs(self) -> Tensor:
        g = torch.Generator().manual_seed(EVAL_SEED)
        return self.toy.sample(EVAL_BATCH, g)


def score(toy: ToyModel, decomposition: Decomposition, names: list[str] | None = None) -> dict[str, float | None]:
    """Every registered metric (or those in ``names``) on one decomposition."""
    ctx = ScoringContext(toy, decomposition)
    out: dict[str, float | None] = {}
    for name in names or METRICS.names():
        m = METRICS.get(name)
        v = m.fn(ctx)
        out[name] = None if v is None else float(v)
    return out


def metric_versions(names: list[str] | None = None) -> dict[str, str]:
    return {n: METRICS.get(n).version for n in names or METRICS.names()}
