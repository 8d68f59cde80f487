"""Analytic chance levels of the recovery metrics for random (isotropic Gaussian) components.

For a unit vector z in R^D and an isotropic Gaussian u, cos^2(u, z) ~ Beta(1/2, (D-1)/2); for a
k-dimensional subspace, the squared principal-angle cosine ||B u||^2 / ||u||^2 ~ Beta(k/2, (D-k)/2). The
expected best |cosine| over C independent components is E[max_i sqrt(X_i)] = int_0^1 1 - F(t^2)^C dt,
with F the Beta CDF. MMCS at chance is the mean of that over mechanisms.
"""

from __future__ import annotations

from collections.abc import Sequence

from scipy import integrate
from scipy.stats import beta


def expected_max_cosine(dim: int, n_components: int, rank: int = 1) -> float:
    """E[max over ``n_components`` isotropic vectors in R^dim of |cos| to a rank-``rank`` subspace]."""
    if dim < 1 or n_components < 1 or not 1 <= rank <= dim:
        raise ValueError(f"need dim >= 1, n_components >= 1, 1 <= rank <= dim; got {dim}, {n_components}, {rank}")
    if rank == dim:
        return 1.0
    dist = beta(rank / 2, (dim - rank) / 2)
    value, _ = integrate.quad(lambda t: 1.0 - dist.cdf(t * t) ** n_components, 0.0, 1.0, limit=200)
    return float(value)


def chance_mmcs(dim: int, n_components: int, ranks: Sequence[int]) -> float:
    """MMCS expected for ``n_components`` isotropic random components against mechanisms of ``ranks``."""
    if not ranks:
        raise ValueError("chance_mmcs: no mechanisms")
    return sum(expected_max_cosine(dim, n_components, k) for k in ranks) / len(ranks)
