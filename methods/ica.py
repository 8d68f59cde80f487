"""ICA baseline: a data-only reference row. Independent components of the activations each weight reads,
as read-side rank-1 parameter components (issue "toy ladder v2"; Hyvarinen and Oja 2000, FastICA).

For each use z = W f of a weight (a :class:`~benchmark.toy.LinearSite`), the activations f are centred and
whitened, symmetric FastICA (log cosh contrast) finds the unmixing directions r_i, and the weight splits
into P_i = W w_i r_i^T with w_i the matching mixing directions (r_i^T w_j = delta_ij), plus the constant and
residual components that make the pieces sum to W (as the PCA row does). It never looks at what the network
computes: where a toy's mechanisms are the independent components of its inputs (TMS: one-hot sparse
features; `shared_neurons`, whose ReLU is the identity on its non-negative data), it recovers them, which
says that the toy, not the method, decided the score. Its attributions are the sources' own magnitudes
(uncentred), the strongest data-only evidence for the scorer's co-activation grouping. A headline toy
must keep this row near chance (the headroom gate of the toy-ladder issue).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from benchmark.decomposition import Decomposition
from benchmark.method import Budget, Method
from benchmark.registry import METHODS
from benchmark.toy import Target
from methods._activation_bases import Basis, covariance_eigen, with_const
from methods._basis_components import per_site_decomposition


def fast_ica(z: Tensor, seed: int, max_iter: int = 400, tol: float = 1e-7) -> Tensor:
    """Symmetric FastICA on whitened data ``z [n, k]`` (log cosh contrast): the orthogonal unmixing
    matrix ``[k, k]`` (rows: directions in the whitened space)."""
    k = z.shape[1]
    g = torch.Generator().manual_seed(seed)
    w, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))
    for _ in range(max_iter):
        y = z @ w.T  # [n, k]
        t = torch.tanh(y)
        new = t.T @ z / z.shape[0] - (1 - t.pow(2)).mean(0)[:, None] * w
        u, _, vh = torch.linalg.svd(new)
        new = u @ vh  # symmetric decorrelation: (W W^T)^(-1/2) W
        done = float((new * w).sum(1).abs().min()) > 1 - tol
        w = new
        if done:
            break
    return w


def ica_basis(f: Tensor, seed: int = 0, rel_tol: float = 1e-10, centred: bool = False) -> Basis:
    """ICA basis of activations ``f [n, d]`` (fitted on the centred data): read = unmixing, write = mixing
    directions. ``centred=False`` (default): a piece's activity is its source's own magnitude, f @ read,
    which is 0 where a sparse source is off; centred coordinates fire on every input wherever the mean is
    not 0, and would hide from the co-activation grouping what the data reveals."""
    mean, U, D, mu_perp = covariance_eigen(f, rel_tol)
    if U.shape[1] == 0:
        return with_const(Basis(mean, U, U.clone(), D), mu_perp)
    z = ((f.detach().to("cpu", torch.float64) - mean) @ U) / D.sqrt()
    w = fast_ica(z, seed)
    read = U @ (w.T / D.sqrt()[:, None])  # f_hat = (f - mean) @ read
    write = U @ (D.sqrt()[:, None] * w.T)  # read.T @ write = I
    signs = torch.sign(read[read.abs().argmax(dim=0), torch.arange(read.shape[1])])
    signs[signs == 0] = 1.0
    read, write = read * signs, write * signs  # each read's largest entry positive, write flipped with it
    order = torch.argsort(write.norm(dim=0), descending=True)  # a reproducible order
    read, write = read[:, order], write[:, order]
    ones = torch.ones(read.shape[1], dtype=torch.float64)
    return with_const(Basis(mean, read, write, ones, centred=centred), mu_perp)


@METHODS.register("ica")
class ICA(Method):
    version = "1"
    paper = "reference row: FastICA of the activations each weight reads (Hyvarinen and Oja 2000), data only"
    reference_row = True

    @dataclass
    class Config:
        n_samples: int = 20_000  # activations sampled per site
        rel_tol: float = 1e-10  # whitening drops directions with variance below this x the largest
        centred: bool = False  # subtract the mean before whitening
        attribution: str = "activation"
        max_floats: float = 1e7  # memory guard on the activations held at once

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        hp = self.hparams(target.spec.name)
        make = partial(ica_basis, seed=seed, rel_tol=hp["rel_tol"], centred=bool(hp["centred"]))
        return per_site_decomposition(target, seed, hp["n_samples"], make, "read", hp["attribution"], hp)
