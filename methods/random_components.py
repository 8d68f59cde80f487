"""The random baseline: random rank-1 components, the same shapes as the decomposed parameters.

Each component is u v^T (Gaussian u, v) in one decomposed matrix (a Gaussian tensor for parameters
that are not matrices). By default each parameter of shape (m, n) gets max(m, n) of them, as many as
a parameter-decomposition method would need to give each input or output direction its own piece, but at
most ``max_per_parameter`` (128), so that a 1000-wide residual weight does not become 1000 dense components.
A lower reference row: its recovery scores sit at chance level for that number of components. Its
per-input attribution is the APD-style gradient attribution (``methods._attribution``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark.decomposition import Decomposition, LowRank, RunRecord
from benchmark.method import Budget, Method
from benchmark.registry import METHODS
from benchmark.toy import Target
from methods._attribution import gradient_attributions


@METHODS.register("random")
class RandomComponents(Method):
    version = "2"
    paper = "reference row: chance level"
    reference_row = True

    @dataclass
    class Config:
        per_parameter: int | None = None  # None: max(shape), at most max_per_parameter
        max_per_parameter: int = 128

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        hp = self.hparams(target.spec.name)
        per = hp["per_parameter"]
        if per is not None and (not isinstance(per, int) or per < 1):
            raise ValueError(f"per_parameter must be a positive integer or None, not {per!r}")
        g = torch.Generator().manual_seed(seed)
        components = []
        for n, p in target.params().items():
            count = per or min(max(p.shape), hp["max_per_parameter"])
            for _ in range(count):
                if p.dim() == 2:
                    u = torch.randn(p.shape[0], 1, generator=g, dtype=p.dtype)
                    v = torch.randn(1, p.shape[1], generator=g, dtype=p.dtype)
                    components.append({n: LowRank(u, v)})  # the same matrix u @ v, stored as its factors
                else:
                    components.append({n: torch.randn(p.shape, generator=g, dtype=p.dtype)})
        if not components:
            raise ValueError("no decomposed parameters to draw random components for")
        dec = Decomposition(components, record=RunRecord(steps=0, hparams=hp))
        model, names = target.model, target.decomposed
        dec.attributions = lambda inputs: gradient_attributions(model, dec, inputs, names)
        return dec
