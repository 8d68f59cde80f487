"""Activity metrics: does a unit fire on exactly the inputs that use its mechanism? (docs/design.md, Scoring.)

A component is active on an input when its |attribution| exceeds ``ACTIVE_TOL`` (0.1) times the largest
|attribution| over the evaluation batch (for SPD's causal importances in [0, 1] this is SPD's own
tolerance of 0.1); a unit (group) is active when any of its components is. Predictions are compared with
the toy model's ``active`` through the Hungarian matching of :mod:`benchmark.metrics.recovery`: a matched
unit predicts its mechanism; an unmatched mechanism's uses are all missed (false negatives); an unmatched
unit's activity is all false positive. Counts are pooled over inputs and pairs (micro-average). Methods
without attributions get N/A.
"""

from __future__ import annotations

import torch

from benchmark.scoring import ScoringContext, f_score, metric


def _counts(ctx: ScoringContext) -> tuple[int, int, int] | None:
    """(true positives, false positives, false negatives) over the eval inputs; None without attributions."""
    if ctx.unit_active is None or not ctx.mechanisms:
        return None
    return ctx.cached("activity_counts", lambda: _count(ctx))


def _count(ctx: ScoringContext) -> tuple[int, int, int]:
    ua, truth = ctx.unit_active, ctx.true_active
    assert ua is not None
    m_idx = torch.tensor([m for m, _ in ctx.matching], dtype=torch.long)
    u_idx = torch.tensor([u for _, u in ctx.matching], dtype=torch.long)
    pred, real = ua[:, u_idx], truth[:, m_idx]
    tp = int((pred & real).sum())
    fp = int((pred & ~real).sum())
    fn = int((~pred & real).sum())
    unmatched_m = torch.ones(truth.shape[1], dtype=torch.bool)
    unmatched_m[m_idx] = False
    unmatched_u = torch.ones(ua.shape[1], dtype=torch.bool)
    unmatched_u[u_idx] = False
    fn += int(truth[:, unmatched_m].sum())
    fp += int(ua[:, unmatched_u].sum())
    return tp, fp, fn


@metric(
    "activity_precision",
    bounds=(0.0, 1.0),
    version="2",
    higher_is_better=True,
    description="Share of (input, unit) activations that fall on inputs using the unit's matched mechanism "
    "(unmatched units' activations are false positives). Needs attributions.",
)
def activity_precision(ctx: ScoringContext) -> float | None:
    c = _counts(ctx)
    if c is None:
        return None
    tp, fp, _ = c
    return tp / (tp + fp) if tp + fp else 0.0


@metric(
    "activity_recall",
    bounds=(0.0, 1.0),
    version="2",
    higher_is_better=True,
    description="Share of (input, mechanism) uses on which the mechanism's matched unit is active (unmatched "
    "mechanisms' uses are missed). Needs attributions.",
)
def activity_recall(ctx: ScoringContext) -> float | None:
    c = _counts(ctx)
    if c is None:
        return None
    tp, _, fn = c
    return tp / (tp + fn) if tp + fn else None


@metric(
    "activity_f1",
    bounds=(0.0, 1.0),
    version="2",
    higher_is_better=True,
    description="Harmonic mean of activity precision and recall. Needs attributions.",
)
def activity_f1(ctx: ScoringContext) -> float | None:
    return f_score(activity_precision(ctx), activity_recall(ctx))


@metric(
    "mean_active_components",
    bounds=(0.0, None),
    version="1",
    grouped=False,
    higher_is_better=False,
    description="Mean number of components active per evaluation input (minimality, SPD's CI-L0). Needs attributions.",
)
def mean_active_components(ctx: ScoringContext) -> float | None:
    ca = ctx.component_active
    if ca is None:
        return None
    return float(ca.sum(dim=1).to(torch.float64).mean())


@metric(
    "active_excess",
    bounds=(None, None),
    version="2",
    higher_is_better=False,
    ideal=0.0,
    description="Mean active units per input minus mean active mechanisms per input (0 = as minimal as the ground "
    "truth; > 0 redundant units fire, < 0 uses are missed). Needs attributions.",
)
def active_excess(ctx: ScoringContext) -> float | None:
    ua = ctx.unit_active
    if ua is None or not ctx.mechanisms:
        return None
    return float(ua.sum(dim=1).to(torch.float64).mean() - ctx.true_active.sum(dim=1).to(torch.float64).mean())
