"""The Local Interaction Basis of one node layer (``docs/reference/lib_pca.md`` section 2.12), built on the
shared activation-basis helpers of :mod:`methods._activation_bases` (float64 throughout: LIB's Jacobian Grams are
unstable in lower precision, rib PR #203)."""

from __future__ import annotations

import torch
from torch import Tensor

from methods._activation_bases import Basis, covariance_eigen, fix_signs, with_const


def lib_basis(f: Tensor, jac_gram: Tensor, rel_tol_var: float = 1e-10, rel_tol_lambda: float = 1e-10) -> Basis:
    """The interaction basis of one node layer (reference section 2.12).

    ``jac_gram`` is M' = E[J^T J] ``[d, d]`` in the neuron basis, J the Jacobian of the next node layer's
    (already scaled) LIB features with respect to f. Whitening f_tilde = D^-1/2 U^T (f - mu), M = D^1/2 U^T
    M' U D^1/2 = V Lambda V^T, and f_hat = Lambda^1/2 V^T f_tilde, so read = U D^-1/2 V Lambda^1/2 and
    write = U D^1/2 V Lambda^-1/2. Features are uncorrelated with variance Lambda_i.
    """
    mean, U, D, mu_perp = covariance_eigen(f, rel_tol_var)
    d = f.shape[1]
    if jac_gram.shape != (d, d):
        raise ValueError(f"Jacobian Gram must be [{d}, {d}], got {tuple(jac_gram.shape)}")
    sq = D.sqrt()
    M = (U * sq).T @ jac_gram.to("cpu", torch.float64) @ (U * sq)
    M = (M + M.T) / 2
    lam, V = torch.linalg.eigh(M)
    lam, V = lam.flip(0).clamp_min(0.0), V.flip(1)
    top = float(lam[0]) if lam.numel() else 0.0
    keep = lam > rel_tol_lambda * top if top > 0 else torch.zeros_like(lam, dtype=torch.bool)
    lam, V = lam[keep], fix_signs(V[:, keep])
    read = (U / sq) @ V * lam.sqrt()
    write = (U * sq) @ V / lam.sqrt()
    return with_const(Basis(mean, read, write, lam), mu_perp)
