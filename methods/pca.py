"""PCA baseline: centred principal directions per weight use, as rank-1 parameter components.

Default ``side="write"``: for each use z = W f of a weight (a :class:`~benchmark.toy.LinearSite`), the
eigenvectors u_j of the centred covariance of z give P_j = u_j u_j^T W, i.e. an SVD of W weighted by the
data (the "PCA/SVD" baseline of the APD paper, arXiv:2501.14926, section 3.1). A weight of rank r writes
at most r directions with variance, so a site yields at most r components: the rank cap that keeps
activation-basis methods from recovering superposed mechanisms shows in the scores.
``side="read"`` is rib's node-layer PCA (``basis_formula: svd, center: true``; Bushnaq et al. 2024,
arXiv:2405.10928; ``docs/reference/lib_pca.md`` sections 3 and 5.1): P_i = W u_i u_i^T with u_i the
principal directions of the activations f the weight reads, the same construction LIB uses, for an
apples-to-apples comparison with it. Both are centred (attributions |u^T (a - mean)|: mean-ablation
semantics) and faithful: a constant component (mean outside the variance span) and a residual component
(directions without variance) make the components sum to W. See ``docs/activation_methods.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from benchmark.decomposition import Decomposition
from benchmark.method import Budget, Method
from benchmark.registry import METHODS
from benchmark.toy import Target
from methods._activation_bases import pca_basis
from methods._basis_components import per_site_decomposition


@METHODS.register("pca")
class PCA(Method):
    version = "2"
    paper = "reference row: PCA/SVD per layer (APD arXiv:2501.14926 s3.1; LIB arXiv:2405.10928)"
    reference_row = True

    @dataclass
    class Config:
        n_samples: int = 20_000  # activations sampled per site
        rel_tol: float = 1e-10  # directions with variance below this x the largest are dropped
        side: str = "write"  # read | write: which side of each matrix the basis lives on
        attribution: str = "activation"
        max_floats: float = 1e7  # memory guard on the activations held at once

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        hp = self.hparams(target.spec.name)
        return per_site_decomposition(
            target, seed, hp["n_samples"], partial(pca_basis, rel_tol=hp["rel_tol"]), hp["side"], hp["attribution"], hp
        )
