"""Tier 0: three copies of a trained TMS 5-2 placed block-diagonally (L3D's "TMS in parallel",
arXiv:2504.00194 Fig S3; ``docs/reference/l3d.md`` 2.1).

W = blockdiag(W5, W5, W5) (6 x 15, tied), b = (b5, b5, b5); 15 features with p = 0.05, U[0,1), all-zero
rows dropped (L3D's generator). Copies of one model cannot interfere across blocks, so a feature's
mechanism is exactly its column of W, as in TMS, and the block structure is exact by construction.
The 5-2 copy is trained with our ``tms_5-2`` recipe (SPD's: AdamW, lr 5e-3, 10k steps, batch 1024)
rather than L3D's (AdamW lr 1e-3, wd 1e-3, 1000 epochs of 10k points), for CPU time; a copy that
loses a feature is rejected and the next seed used.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from benchmark.registry import TOY_MODELS
from benchmark.toy import ToyModelSpec
from toy_models._common import drop_zero_rows, sparse_features
from toy_models.tms import TMS, TMSNet


class ParallelTMS(TMS):
    def __init__(self, copies: int = 3, seed: int = 0):
        super().__init__(5 * copies, 2 * copies, seed=seed, tier=0, name="parallel_tms")
        self.copies = copies
        self.drops_zero_inputs = True  # L3D's generator: P(feature on | some feature on)
        self.activation_rate = self.p / (1 - (1 - self.p) ** self.n_features)
        self.spec = ToyModelSpec(
            name="parallel_tms",
            tier=0,
            version="1",
            seed=seed,
            gt_status="exact",
            description=f"{copies} copies of a trained TMS 5-2 placed block-diagonally ({5 * copies} features, "
            f"{2 * copies} hidden, tied); one rank-1 mechanism per feature; all-zero inputs dropped (L3D).",
            paper="L3D arXiv:2504.00194 (Fig S3); TMS: Elhage et al. 2022",
            decomposed=("W",),
        )

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return drop_zero_rows(lambda k: sparse_features(k, self.n_features, self.p, generator), n)

    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        small = TMS(seed=seed)
        net = TMSNet(5, 2)
        info = small.fit(net, seed)
        problem = small.health(net, info)
        with torch.no_grad():
            model.W.zero_()
            for k in range(self.copies):
                model.W[2 * k : 2 * k + 2, 5 * k : 5 * k + 5] = net.W
            model.b.copy_(net.b.repeat(self.copies))
        return dict(info, copy_health=problem)

    def health(self, model: nn.Module, info: dict[str, Any]) -> str | None:
        return info.get("copy_health") or super().health(model, info)


TOY_MODELS.register("parallel_tms", ParallelTMS)
