"""Recovery metrics: how well the decomposition's units align with the ground-truth mechanisms.

All use the credit matrix ``cosines`` of :class:`benchmark.scoring.ScoringContext` over the whole flattened
decomposed-parameter vector (a unit's mass outside a mechanism counts against it), so all are invariant
to the order, sign and scale of units. Splits (one mechanism covered by several units) and merges (one
unit covering several mechanisms) lower ``hungarian`` and are counted by ``split_mechanisms`` and
``merged_components``; merges also lower ``mmcs``. ``hungarian`` is read at the engine's grouping level;
``hungarian_raw``, ``hungarian_own`` and ``hungarian_oracle`` give the other levels. Definitions:
docs/metrics.md.
"""

from __future__ import annotations

import torch
from torch import Tensor

from benchmark.scoring import DEAD_TOL, ScoringContext, f_score, mean_or_none, metric

COVER_TOL = 0.5  # |cos| at which a unit counts as lying mostly along a mechanism (cos^2 = 1/4 of its mass)
MERGE_GAIN = 0.1  # |cos| gained by explaining a unit with its two best mechanisms instead of one


@metric(
    "mmcs",
    bounds=(0.0, 1.0),
    version="3",
    higher_is_better=True,
    description="Mean over mechanisms of the best |cosine| between any live unit (group or component) and the "
    "mechanism (principal-angle cosine for subspaces); APD/SPD's mean max cosine, mechanism-level and with |.|.",
)
def mmcs(ctx: ScoringContext) -> float | None:
    if not ctx.mechanisms:
        return None
    return float(ctx.cosines.max(dim=1).values.mean()) if ctx.cosines.shape[1] else 0.0


@metric(
    "hungarian",
    bounds=(0.0, 1.0),
    version="3",
    higher_is_better=True,
    description="Headline. One-to-one (Hungarian) matching of mechanisms to live units maximising total credit; "
    "sum of matched credit / max(#mechanisms, #live units), units grouped by co-activation (threshold swept).",
)
def hungarian(ctx: ScoringContext) -> float | None:
    if not ctx.mechanisms:
        return None
    total = sum(float(ctx.cosines[m, u]) for m, u in ctx.matching)
    return total / max(len(ctx.mechanisms), int(ctx.live.sum()))


@metric(
    "hungarian_raw",
    bounds=(0.0, 1.0),
    version="1",
    higher_is_better=True,
    grouped=False,
    description="Grouping level 1: hungarian with every component its own unit (no grouping at all).",
)
def hungarian_raw(ctx: ScoringContext) -> float | None:
    return hungarian(ctx.space.raw)


@metric(
    "hungarian_own",
    bounds=(0.0, 1.0),
    version="1",
    higher_is_better=True,
    grouped=False,
    description="The method's own level: hungarian with the groups the method returns (where its paper defines "
    "them, e.g. LIB); N/A for methods that return none.",
)
def hungarian_own(ctx: ScoringContext) -> float | None:
    if not ctx.decomposition.groups:
        return None
    return hungarian(ctx.space.own)


@metric(
    "hungarian_oracle",
    bounds=(0.0, 1.0),
    version="1",
    higher_is_better=True,
    grouped=False,
    description="Diagnostic, never a headline: hungarian with, per mechanism, the components closest to it joined "
    "greedily while each raises its credit (the grouping uses the ground truth; greedy, so not a strict bound).",
)
def hungarian_oracle(ctx: ScoringContext) -> float | None:
    return hungarian(ctx.space.oracle_grouped)


def _mass_shares(ctx: ScoringContext) -> tuple[Tensor, Tensor]:
    """(per live unit, the largest share of its squared norm inside one mechanism's support; per mechanism,
    the largest share of it that one unit covers: the squared cosine between the mechanism and the unit's
    part inside the mechanism's support, or the squared credit for a span-only mechanism). A split costs
    recall only (each piece lies in one mechanism), a merge precision only (its unit covers each of its
    mechanisms whole)."""
    live = ctx.live
    if not bool(live.any()):
        return torch.zeros(0, dtype=torch.float64), torch.zeros(len(ctx.mechanisms), dtype=torch.float64)
    sq = ctx.cosines.pow(2)
    inside = ctx.support_sq_norms("units")
    cover = torch.where(ctx.span_only[:, None], sq, ctx.along_sq / inside.clamp_min(1e-300)).clamp(0.0, 1.0)
    share = (inside / ctx.unit_norms.pow(2).clamp_min(1e-300)[None, :]).clamp(0.0, 1.0)
    # a unit taken as its components' span: its credit says it all
    share = torch.where(ctx.as_span[None, :], sq, share)
    cover = torch.where(ctx.as_span[None, :], sq, cover)
    return share[:, live].max(dim=0).values, cover[:, live].max(dim=1).values


@metric(
    "mass_precision",
    bounds=(0.0, 1.0),
    version="1",
    higher_is_better=True,
    description="Over parameter mass: the largest share of each live unit's squared norm inside one mechanism's "
    "support, averaged over live units. Merges and units that spill outside a mechanism lower it; splits do not.",
)
def mass_precision(ctx: ScoringContext) -> float | None:
    if not ctx.mechanisms:
        return None
    best, _ = _mass_shares(ctx)
    return float(best.mean()) if best.numel() else 0.0


@metric(
    "mass_recall",
    bounds=(0.0, 1.0),
    version="1",
    higher_is_better=True,
    description="Over parameter mass: how much of each mechanism its best unit covers (squared cosine with the unit's "
    "part inside the mechanism's support), weighted by the mechanism's squared norm (equal weights where a mechanism "
    "is a span only). Splits and misses lower it; merges do not.",
)
def mass_recall(ctx: ScoringContext) -> float | None:
    if not ctx.mechanisms:
        return None
    _, best = _mass_shares(ctx)
    return float((best * ctx.masses).sum() / ctx.masses.sum())


@metric(
    "mass_f1",
    bounds=(0.0, 1.0),
    version="1",
    higher_is_better=True,
    description="Harmonic mean of mass_precision and mass_recall.",
)
def mass_f1(ctx: ScoringContext) -> float | None:
    return f_score(mass_precision(ctx), mass_recall(ctx))


@metric(
    "subspace_coverage",
    bounds=(0.0, 1.0),
    version="2",
    higher_is_better=True,
    description="Subspace mechanisms only: RMS of the principal-angle cosines between the mechanism's subspace "
    "and the span of its matched unit's components, zero-padded to the larger dimension (1 iff the spans agree).",
)
def subspace_coverage(ctx: ScoringContext) -> float | None:
    matched = dict(ctx.matching)
    scores = []
    for m, mech in enumerate(ctx.mechanisms):
        if mech.components is not None:
            continue  # only mechanisms defined by a span alone
        basis = ctx.bases[m]
        u = matched.get(m)
        if u is None:
            scores.append(0.0)
            continue
        span = ctx.span_basis(ctx.units[u])  # orthonormal basis of the unit's span
        overlap = float((basis @ span.T).pow(2).sum())  # sum of cos^2 of the principal angles
        scores.append(min(1.0, overlap / max(basis.shape[0], span.shape[0])) ** 0.5)
    return mean_or_none(scores)


@metric(
    "support_purity",
    bounds=(0.0, 1.0),
    version="2",
    higher_is_better=True,
    description="Mean over matched (mechanism, unit) pairs of the share of the unit's squared norm that lies inside "
    "the mechanism's support mask.",
)
def support_purity(ctx: ScoringContext) -> float | None:
    if not ctx.matching:
        return None
    u_idx = torch.tensor([u for _, u in ctx.matching])
    m_idx = torch.tensor([m for m, _ in ctx.matching])
    inside = ctx.support_sq_norms("units")[m_idx, u_idx]
    return float((inside / ctx.unit_norms[u_idx].pow(2)).mean())


@metric(
    "split_mechanisms",
    bounds=(0.0, None),
    version="2",
    higher_is_better=False,
    description=f"Number of matched mechanisms that some unmatched live unit also covers: |cosine| >= {COVER_TOL} to "
    "the mechanism, and no closer to any other mechanism (one mechanism split over several units).",
)
def split_mechanisms(ctx: ScoringContext) -> float | None:
    if not ctx.mechanisms:
        return None
    matched_units = {u for _, u in ctx.matching}
    spare = [u for u in torch.nonzero(ctx.live).flatten().tolist() if u not in matched_units]
    if not spare:
        return 0.0
    cos = ctx.cosines[:, spare]  # [M, spare]
    best = cos >= cos.max(dim=0, keepdim=True).values - 1e-12  # ties: the unit is closest to each of them
    cover = (cos >= COVER_TOL) & best
    return float(sum(bool(cover[m].any()) for m, _ in ctx.matching))


@metric(
    "merged_components",
    bounds=(0.0, None),
    version="2",
    higher_is_better=False,
    description=f"Number of live units that lie mostly in the span of two mechanisms (|cosine| >= {COVER_TOL}) and "
    f"are explained by both better than by their best one alone (|cosine| gain >= {MERGE_GAIN}).",
)
def merged_components(ctx: ScoringContext) -> float | None:
    M = len(ctx.mechanisms)
    if M < 2:
        return None if M == 0 else 0.0
    owner = ctx.basis_owner
    proj = ctx.projections / ctx.unit_norms.clamp_min(1e-300)[None, :]  # [K, U], coordinates of unit vectors
    top2 = ctx.cosines.topk(2, dim=0)
    inverse: dict[tuple[int, int], Tensor] = {}  # per mechanism pair, shared by the units closest to it
    count = 0
    for u in torch.nonzero(ctx.live).flatten().tolist():
        m1, m2 = top2.indices[:, u].tolist()
        c1 = float(top2.values[0, u])
        a = torch.cat([proj[owner == m1, u], proj[owner == m2, u]])
        if (m1, m2) not in inverse:
            gram = torch.cat(
                [
                    torch.cat([ctx.basis_gram(m1, m1), ctx.basis_gram(m1, m2)], dim=1),
                    torch.cat([ctx.basis_gram(m2, m1), ctx.basis_gram(m2, m2)], dim=1),
                ]
            )
            inverse[m1, m2] = torch.linalg.pinv(gram)
        c12 = abs(float(a @ inverse[m1, m2] @ a)) ** 0.5
        count += c12 >= COVER_TOL and c12 - c1 >= MERGE_GAIN
    return float(count)


@metric(
    "dead_components",
    bounds=(0.0, None),
    version="2",
    grouped=False,
    higher_is_better=False,
    description=f"Number of components with negligible norm (< {DEAD_TOL} x the largest) or, where the method gives "
    "attributions, never active on the evaluation inputs (unless matched to a mechanism no eval input uses).",
)
def dead_components(ctx: ScoringContext) -> float | None:
    norms = ctx.components.norm(dim=1)
    dead = (norms == 0) | (norms < DEAD_TOL * float(norms.max()))
    if ctx.component_active is not None:
        silent = ~ctx.component_active.any(dim=0)
        # a component matched to a mechanism that no eval input uses cannot be seen firing: not called dead
        unseen = [m for m in range(len(ctx.mechanisms)) if not ctx.true_active[:, m].any()]
        for m, u in ctx.matching:
            if m in unseen:
                silent[ctx.units[u]] = False
        dead |= silent
    return float(dead.sum())
