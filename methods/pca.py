"""PCA baseline: per weight use, the principal directions of what the weight writes, as rank-1 components.

For each use of a weight matrix W in the forward pass (a :class:`~benchmark.toy.LinearSite`, z = W f),
take the eigenvectors u_k of the centred covariance of z on the training distribution, keep those with
non-negligible variance, and return P_k = u_k u_k^T W (rank 1, in W's shape; transposed back where the
forward pass uses W^T). This is PCA at the layer W writes to, i.e. an SVD of W weighted by the data,
so a weight of rank r yields at most r components per use: activation-basis methods cannot recover
more mechanisms than the layer's rank (APD paper, arXiv:2501.14926, section 3.1;
``shared/reference/rib_lib_pca.md`` sections 3 and 5). Attributions: |u_k^T (z - mean z)|.
"""

from __future__ import annotations

import torch
from torch import Tensor

from benchmark.decomposition import Decomposition, RunRecord
from benchmark.method import Budget, Method
from benchmark.registry import METHODS
from benchmark.toy import Target


@METHODS.register("pca")
class PCA(Method):
    name = "pca"
    version = "1"
    paper = "reference row: PCA/SVD per layer (APD arXiv:2501.14926 s3.1; LIB arXiv:2405.10928)"
    reference_row = True
    defaults = {"n_samples": 20_000, "rel_tol": 1e-6}

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        hp = self.hparams(target.spec.name)
        g = torch.Generator().manual_seed(seed)
        x = target.sample(hp["n_samples"], g)
        params = target.params()
        components: list[dict[str, Tensor]] = []
        readers: list[tuple[int, Tensor, Tensor]] = []  # (site index, u_k, mean) per component
        with torch.no_grad():
            sites = target.sites(x)
            for s, site in enumerate(sites):
                W = params[site.param].detach().to(torch.float64)
                W_eff = W.T if site.transposed else W
                z = site.inputs.to(torch.float64) @ W_eff.T
                mean = z.mean(0)
                cov = torch.cov(z.T).reshape(z.shape[1], z.shape[1])
                evals, evecs = torch.linalg.eigh(cov)
                keep = evals > hp["rel_tol"] * evals.max().clamp_min(1e-300)
                for k in torch.nonzero(keep).flatten().flip(0).tolist():
                    u = evecs[:, k]
                    P = torch.outer(u, u) @ W_eff
                    components.append({site.param: (P.T if site.transposed else P).to(params[site.param].dtype)})
                    readers.append((s, u, mean))

        def attributions(inputs: Tensor) -> Tensor:
            with torch.no_grad():
                sites = target.sites(inputs)
                cols = []
                for s, u, mean in readers:
                    site = sites[s]
                    W = params[site.param].detach().to(torch.float64)
                    z = site.inputs.to(torch.float64) @ (W if site.transposed else W.T)
                    cols.append(((z - mean) @ u).abs())
                return torch.stack(cols, dim=1).float()

        return Decomposition(components, attributions=attributions, record=RunRecord(steps=0, hparams=hp))
