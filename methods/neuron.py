"""Neuron baseline: the standard basis of the activations each weight reads (rib's ``neuron`` basis).

For a weight use z = W f, component i is P_i = W e_i e_i^T: the weight's column for input neuron i (its
row, for a weight used transposed). Uncentred, as in rib (Bushnaq et al. 2024, arXiv:2405.10928;
``docs/reference/lib_pca.md`` sections 3 and 5.5); attributions |f_i(x)|. A trivial reference row:
where a toy model's mechanisms are aligned with its input neurons (TMS's features are one-hot input
directions), it recovers them exactly, which says more about the toy than about any method.
A site that reads more than ``max_per_site`` neurons (a 1000-wide residual stream) uses the standard basis
of its output side instead, where that is narrower, so that the row stays a handful of components.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.decomposition import Decomposition
from benchmark.method import Budget, Method
from benchmark.registry import METHODS
from benchmark.toy import Target
from methods._activation_bases import neuron_basis
from methods._basis_components import per_site_decomposition


@METHODS.register("neuron")
class Neuron(Method):
    version = "1"
    paper = "reference row: standard (neuron) basis per layer (rib basis_formula: neuron, arXiv:2405.10928)"
    reference_row = True

    @dataclass
    class Config:
        side: str = "read"  # read | write: which side of each matrix the unit directions live on
        attribution: str = "activation"
        max_per_site: int | None = 256  # at most this many units per site (None: no limit)

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        hp = self.hparams(target.spec.name)
        return per_site_decomposition(
            target, seed, 2, lambda a: neuron_basis(a.shape[1]), hp["side"], hp["attribution"], hp, hp["max_per_site"]
        )
