"""Activation bases per node layer, shared by the PCA, neuron and LIB methods: the :class:`Basis` container, the
covariance eigendecomposition, PCA and the standard (neuron) basis. LIB's interaction basis is in
:mod:`methods._lib_basis`.

Column notation throughout (``docs/reference/lib_pca.md`` section 2.12). A :class:`Basis` of an
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


def fix_signs(vecs: Tensor) -> Tensor:
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
    U, D = fix_signs(evecs[:, keep]), evals[keep]
    mu_perp = mean - U @ (U.T @ mean)
    if float(mu_perp.pow(2).sum()) <= rel_tol * (float(mean.pow(2).sum()) + top) or float(mu_perp.norm()) == 0:
        mu_perp = None
    return mean, U, D, mu_perp


def with_const(basis: Basis, mu_perp: Tensor | None) -> Basis:
    """Attach the constant direction (the part ``mu_perp`` of the data mean outside the kept span), if any."""
    if mu_perp is not None:
        basis.const_read = mu_perp / mu_perp.pow(2).sum()
        basis.const_write = mu_perp
    return basis


def pca_basis(f: Tensor, rel_tol: float = 1e-10) -> Basis:
    """Centred PCA (rib's ``svd`` basis with ``center: true``): orthonormal, by variance, not whitened."""
    mean, U, D, mu_perp = covariance_eigen(f, rel_tol)
    return with_const(Basis(mean, U, U.clone(), D), mu_perp)


def neuron_basis(d: int) -> Basis:
    """The standard basis (rib's ``neuron`` basis): C = I, uncentred."""
    eye = torch.eye(d, dtype=torch.float64)
    return Basis(
        torch.zeros(d, dtype=torch.float64), eye, eye.clone(), torch.ones(d, dtype=torch.float64), centred=False
    )
