"""Small hand-built toy models for checking metrics (unit tests, chance levels, docs examples).

They are built in memory (no training, no weight cache) and are not registered as benchmark toy models.
``LinearToy`` is ``y = x @ W.T`` with a given ``W`` and one mechanism per column of W; optionally the
last ``subspace_cols`` columns form one subspace mechanism (the span of those columns' weights), as for
a higher-rank circuit where only the span is defined.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from benchmark.toy import GroundTruth, LinearSite, Mechanism, ToyModel, ToyModelSpec


class LinearNet(nn.Module):
    def __init__(self, W: Tensor):
        super().__init__()
        self.W = nn.Parameter(W.clone().to(torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.W.T


class LinearToy(ToyModel):
    """``y = x @ W.T``; feature j (column j) is mechanism j; input j is active when it is non-zero."""

    def __init__(self, W: Tensor, subspace_cols: int = 0, p_active: float = 0.3, name: str = "linear_toy"):
        super().__init__()
        if W.dim() != 2:
            raise ValueError(f"W must be a matrix, got shape {tuple(W.shape)}")
        if not 0 <= subspace_cols <= W.shape[1]:
            raise ValueError(f"subspace_cols must be in [0, {W.shape[1]}], got {subspace_cols}")
        self.W0, self.k, self.p = W.to(torch.float32), subspace_cols, p_active
        self.spec = ToyModelSpec(
            name=name,
            tier=0,
            version="1",
            seed=0,
            gt_status="exact",
            description="hand-built linear toy for metric tests",
            paper="(test fixture)",
            decomposed=("W",),
        )
        model = self.make_model()
        self._model = model.requires_grad_(False).eval()
        self._gt = GroundTruth(self.mechanisms(model), self.active)

    def make_model(self) -> nn.Module:
        return LinearNet(self.W0)

    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        return {"hand_built": True}

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        on = torch.rand(n, self.W0.shape[1], generator=generator) < self.p
        return torch.rand(n, self.W0.shape[1], generator=generator) * on

    @property
    def n_mechanisms(self) -> int:
        n = self.W0.shape[1]
        return n - self.k + (1 if self.k else 0)

    def mechanisms(self, model: nn.Module) -> list[Mechanism]:
        W = model.W.detach()
        n = W.shape[1]
        out = []
        for c in range(n - self.k):
            mask = torch.zeros_like(W, dtype=torch.bool)
            mask[:, c] = True
            out.append(Mechanism(f"col{c}", support={"W": mask}, components={"W": torch.where(mask, W, 0.0)}))
        if self.k:
            cols = list(range(n - self.k, n))
            mask = torch.zeros_like(W, dtype=torch.bool)
            mask[:, cols] = True
            vecs = torch.zeros(self.k, *W.shape)
            for i, c in enumerate(cols):
                vecs[i, :, c] = W[:, c] / W[:, c].norm()
            out.append(Mechanism("subspace", support={"W": mask}, subspace={"W": vecs}))
        return out

    def active(self, inputs: Tensor) -> Tensor:
        on = inputs != 0
        if not self.k:
            return on
        return torch.cat([on[:, : on.shape[1] - self.k], on[:, on.shape[1] - self.k :].any(dim=1, keepdim=True)], dim=1)

    def sites(self, model: nn.Module, inputs: Tensor) -> list[LinearSite]:
        return [LinearSite("W", inputs)]
