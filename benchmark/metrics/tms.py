"""MMCS and ML2R exactly as the APD and SPD papers compute them, so our numbers sit beside their tables.

APD (Braun et al. 2025, arXiv:2501.14926) and SPD (Bushnaq et al. 2025, arXiv:2506.20790), for TMS with
W in R^{m1 x m2} and component matrices P_c (``docs/reference/apd_spd.md`` section 2.1):

    MMCS = (1/m2) sum_j max_c cos(P_{c,:,j}, W_{:,j})
    ML2R = (1/m2) sum_j ||P_{mcs(j),:,j}|| / ||W_{:,j}||,   mcs(j) = argmax_c cos(P_{c,:,j}, W_{:,j})

Column j of W is the TMS mechanism of feature j (its support), so the general form is, over the exact,
not-always-on mechanisms m with component z_m and support S_m: cos(P_c restricted to S_m, z_m). This is
the papers' formula on TMS (and leaves out an always-on identity, as SPD's TMS+ID table does). The cosine
is signed, as in the papers, where the method claims faithfulness (its components sum to the weights, so
their sign is meaningful); for methods without that claim (e.g. L3D's sign-free unit directions) |cos| is
used. ML2R (a norm ratio, 1 = no shrinkage) needs the faithfulness claim; otherwise it is N/A.
"""

from __future__ import annotations

import torch
from torch import Tensor

from benchmark.scoring import ScoringContext, metric
from benchmark.toy import flatten

EPS = 1e-12  # as in SPD's compute_cosine_similarities


def _column_cosines(ctx: ScoringContext) -> tuple[Tensor, Tensor, Tensor] | None:
    """(cos [M', C], restricted component norms [M', C], mechanism norms [M']) over exact, not-always-on
    mechanisms; None when there are none."""
    return ctx.cached("apd_cosines", lambda: _compute_column_cosines(ctx))


def _compute_column_cosines(ctx: ScoringContext) -> tuple[Tensor, Tensor, Tensor] | None:
    idx = [i for i, m in enumerate(ctx.mechanisms) if m.components is not None and not m.always_on]
    if not idx:
        return None
    exact = [ctx.mechanisms[i].components for i in idx]
    z = (
        torch.cat(
            [
                flatten({k: v.unsqueeze(0) for k, v in e.items()}, ctx.names, ctx.shapes, 1)
                for e in exact
                if e is not None
            ]
        )
        * ctx.supports[idx]
    )  # restricted to the support
    z_norm = z.norm(dim=1)
    comps = ctx.components  # [C, D]
    restricted_norm = ctx.support_sq_norms("components")[idx].sqrt()  # [M', C]
    dots = z @ comps.T  # [M', C]; z is zero off its support, so this is the restricted dot product
    cos = dots / (restricted_norm * z_norm[:, None]).clamp_min(EPS)
    if not ctx.decomposition.faithful:
        cos = cos.abs()
    return cos, restricted_norm, z_norm


@metric(
    "mmcs_apd",
    bounds=(-1.0, 1.0),
    version="1",
    grouped=False,
    higher_is_better=True,
    description="APD/SPD's MMCS: mean over exact, not-always-on mechanisms (TMS: columns of W) of the best cosine "
    "between a component restricted to the mechanism's support and the mechanism; signed where faithful.",
)
def mmcs_apd(ctx: ScoringContext) -> float | None:
    got = _column_cosines(ctx)
    if got is None:
        return None
    return float(got[0].max(dim=1).values.mean())


@metric(
    "ml2r_apd",
    bounds=(0.0, None),
    version="1",
    grouped=False,
    higher_is_better=True,
    ideal=1.0,
    description="APD/SPD's ML2R: mean over the same mechanisms of ||best-cosine component on the support|| / "
    "||mechanism||; 1 = no shrinkage (closer to 1 is better). Faithful methods only, else N/A.",
)
def ml2r_apd(ctx: ScoringContext) -> float | None:
    if not ctx.decomposition.faithful:
        return None
    got = _column_cosines(ctx)
    if got is None:
        return None
    cos, restricted_norm, z_norm = got
    best = cos.argmax(dim=1)
    ratios = restricted_norm.gather(1, best[:, None]).squeeze(1) / z_norm.clamp_min(EPS)
    return float(ratios.mean())
