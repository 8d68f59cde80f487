"""Whole-network baseline: one component that is all the decomposed parameters.

The coarsest faithful decomposition. Every mechanism's |cosine| with it is the share of the weights'
norm that the mechanism holds, so a method's recovery reads against it; its per-input attribution is the
APD-style gradient attribution (``methods._attribution``), i.e. how much the output moves with the
weights on that input.
"""

from __future__ import annotations

from benchmark.decomposition import Decomposition, RunRecord
from benchmark.method import Budget, Method
from benchmark.registry import METHODS
from benchmark.toy import Target
from methods._attribution import gradient_attributions


@METHODS.register("whole")
class Whole(Method):
    version = "1"
    paper = "reference row: one component = all parameters"
    reference_row = True

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        params = target.params()
        dec = Decomposition(
            [{n: p.detach().clone() for n, p in params.items()}],
            groups=[[0]],
            faithful=True,
            record=RunRecord(steps=0, hparams=self.hparams(target.spec.name)),
        )
        model, names = target.model, target.decomposed
        dec.attributions = lambda inputs: gradient_attributions(model, dec, inputs, names)
        return dec
