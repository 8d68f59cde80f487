"""Recovery metrics: how well components align with the ground-truth mechanisms.

Both use the |cosine| matrix of :class:`benchmark.scoring.ScoringContext` over the whole flattened
decomposed-parameter vector, so a component's mass outside a mechanism counts against it, and both
are invariant to the order, sign and scale of components.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from benchmark.scoring import ScoringContext, metric


@metric(
    "mmcs",
    version="1",
    higher_is_better=True,
    description="Mean over mechanisms of the best |cosine| between any component and the mechanism "
    "(APD/SPD's mean max cosine similarity, taken over whole parameter vectors and with |.|).",
)
def mmcs(ctx: ScoringContext) -> float | None:
    if not ctx.mechanisms:
        return None
    return float(ctx.cosines.max(dim=1).values.mean())


@metric(
    "hungarian",
    version="1",
    higher_is_better=True,
    description="Mean over mechanisms of the |cosine| under a one-to-one matching of components to "
    "mechanisms (Hungarian algorithm, maximising total |cosine|); an unmatched mechanism scores 0.",
)
def hungarian(ctx: ScoringContext) -> float | None:
    if not ctx.mechanisms:
        return None
    cos = ctx.cosines.numpy()
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return float(np.sum(cos[rows, cols]) / cos.shape[0])
