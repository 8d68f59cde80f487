"""The oracle: returns the ground truth itself. The one method allowed to see it (labelled as such).

Exact mechanisms become one component each; a subspace mechanism becomes one component per basis
vector. Its attributions are the ground truth's ``active`` pattern. It is the leaderboard's upper
reference row: every recovery metric should be at its best value on it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from benchmark.decomposition import Decomposition, RunRecord
from benchmark.method import Budget, Method
from benchmark.registry import METHODS
from benchmark.toy import Target


@METHODS.register("oracle")
class Oracle(Method):
    version = "1"
    paper = "reference row: the ground truth"
    reference_row = True
    sees_ground_truth = True

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        gt = target.ground_truth
        if gt is None:
            raise RuntimeError("the oracle needs the ground truth, which the runner gives only to it")
        components, groups = [], []
        for mech in gt.mechanisms:
            start = len(components)
            if mech.components is not None:
                components.append({k: v.clone() for k, v in mech.components.items()})
            else:
                assert mech.subspace is not None
                for i in range(mech.rank):
                    components.append({k: v[i].clone() for k, v in mech.subspace.items()})
            groups.append(list(range(start, len(components))))
        owner = torch.tensor([i for i, g in enumerate(groups) for _ in g])

        def attributions(inputs: Tensor) -> Tensor:
            return gt.active(inputs).to(torch.float32)[:, owner]

        exact = all(m.components is not None for m in gt.mechanisms)
        return Decomposition(
            components,
            attributions=attributions,
            groups=groups,
            faithful=exact,
            record=RunRecord(steps=0, hparams=self.hparams(target.spec.name)),
        )
