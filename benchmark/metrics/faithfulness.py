"""Faithfulness: do the components sum to the weights? (APD/SPD's faithfulness; docs/design.md, Scoring.)

Only for decompositions that claim it (``Decomposition.faithful``); L3D's unit directions and other
methods without the claim get N/A.
"""

from __future__ import annotations

from benchmark.scoring import ScoringContext, metric


@metric(
    "faithfulness_error",
    bounds=(0.0, None),
    version="1",
    grouped=False,
    higher_is_better=False,
    description="||W - sum_c P_c||_F / ||W||_F over all decomposed parameters (0 = the components sum exactly to "
    "the weights). Only where the method claims faithfulness, else N/A.",
)
def faithfulness_error(ctx: ScoringContext) -> float | None:
    if not ctx.decomposition.faithful:
        return None
    w = ctx.weights
    return float((w - ctx.components.sum(dim=0)).norm() / w.norm().clamp_min(1e-300))
