"""Activation bases per node layer: PCA, the standard (neuron) basis, and the Local Interaction Basis.

Column notation throughout (``shared/reference/rib_lib_pca.md`` section 2.12). A :class:`Basis` of an
activation space R^d holds the mean mu, *read* vectors (columns of ``read``, f_hat = (f - mu) @ read) and
*write* vectors (columns of ``write``, f ~ mu + f_hat @ write.T) with ``read.T @ write = I``. Where the
data mean has a part outside the span of the data's variance, that part becomes a separate *constant*
direction (read mu_perp / |mu_perp|^2, write mu_perp), so that f = mu + sum_i f_hat_i write_i holds exactly
on the data. Biases are not folded in (the toy networks keep theirs outside the decomposed parameters).

Everything here is float64: LIB's Jacobian Grams are unstable in lower precision (rib PR #203).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Basis:
    """A biorthogonal basis of one activation space (see the module docstring)."""

    mean: Tensor  # [d]
    read: Tensor  # [d, r]
    write: Tensor  # [d, r]
    scale: Tensor  # [r]: variance (PCA), Lambda (LIB), ones (neuron)
    centred: bool = True
    const_read: Tensor | None = None  # [d]
    const_write: Tensor | None = None  # [d]

    @property
    def dim(self) -> int:
        return self.read.shape[0]

    @property
    def rank(self) -> int:
        return self.read.shape[1]

    def coords(self, f: Tensor) -> Tensor:
        """Feature activations f_hat ``[batch, r]`` of activations ``f [batch, d]``."""
        f = f.detach().to(self.read)
        return (f - self.mean) @ self.read if self.centred else f @ self.read

    def projector(self) -> Tensor:
        """``[d, d]`` (oblique) projection onto the kept directions plus the constant direction."""
        p = self.write @ self.read.T
        if self.const_read is not None:
            p = p + torch.outer(self.const_write, self.const_read)
        return p


def _fix_signs(vecs: Tensor) -> Tensor:
    """Make every column's largest-magnitude entry positive, so that bases are reproducible."""
    if vecs.numel() == 0:
        return vecs
    idx = vecs.abs().argmax(dim=0)
    signs = torch.sign(vecs[idx, torch.arange(vecs.shape[1])])
    signs[signs == 0] = 1.0
    return vecs * signs


def covariance_eigen(f: Tensor, rel_tol: float) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Mean, kept eigenvectors U ``[d, k]`` and eigenvalues D ``[k]`` (descending) of the covariance of f.

    Directions with variance <= ``rel_tol * max variance`` are dropped (rib's first truncation, made relative
    as the reference advises, section 2.14). Also returns mu_perp, the part of the mean outside span(U), or
    None when it is negligible.
    """
    f = f.detach().to("cpu", torch.float64)
    if f.ndim != 2:
        raise ValueError(f"activations must be [batch, d], got shape {tuple(f.shape)}")
    if not torch.isfinite(f).all():
        raise ValueError("activations contain NaN or infinite values")
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 samples to estimate a covariance, got {f.shape[0]}")
    mean = f.mean(0)
    fc = f - mean
    cov = fc.T @ fc / f.shape[0]
    evals, evecs = torch.linalg.eigh(cov)
    evals, evecs = evals.flip(0).clamp_min(0.0), evecs.flip(1)
    top = float(evals[0]) if evals.numel() else 0.0
    keep = evals > rel_tol * top if top > 0 else torch.zeros_like(evals, dtype=torch.bool)
    U, D = _fix_signs(evecs[:, keep]), evals[keep]
    mu_perp = mean - U @ (U.T @ mean)
    if float(mu_perp.pow(2).sum()) <= rel_tol * (float(mean.pow(2).sum()) + top) or float(mu_perp.norm()) == 0:
        mu_perp = None
    return mean, U, D, mu_perp


def _with_const(basis: Basis, mu_perp: Tensor | None) -> Basis:
    if mu_perp is not None:
        basis.const_read = mu_perp / mu_perp.pow(2).sum()
        basis.const_write = mu_perp
    return basis


def pca_basis(f: Tensor, rel_tol: float = 1e-10) -> Basis:
    """Centred PCA (rib's ``svd`` basis with ``center: true``): orthonormal, by variance, not whitened."""
    mean, U, D, mu_perp = covariance_eigen(f, rel_tol)
    return _with_const(Basis(mean, U, U.clone(), D), mu_perp)


def neuron_basis(d: int) -> Basis:
    """The standard basis (rib's ``neuron`` basis): C = I, uncentred."""
    eye = torch.eye(d, dtype=torch.float64)
    return Basis(
        torch.zeros(d, dtype=torch.float64), eye, eye.clone(), torch.ones(d, dtype=torch.float64), centred=False
    )


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
    lam, V = lam[keep], _fix_signs(V[:, keep])
    read = (U / sq) @ V * lam.sqrt()
    write = (U * sq) @ V / lam.sqrt()
    return _with_const(Basis(mean, read, write, lam), mu_perp)
