"""Tier 0: independent ReLU MLPs placed block-diagonally (hand-built, exact by construction).

Each block k is a 2-layer ReLU MLP from its own input slice to its own output slice; the network is
``y = W2 ReLU(W1 x)`` with block-diagonal ``W1``, ``W2`` and no biases. Block k's mechanism is its
two diagonal blocks; it is active exactly when its input slice is non-zero. Its declared refinement is
the block split per ReLU neuron (neuron j's W1 row and W2 column, one cross-layer piece each): a neuron
is the smallest piece that acts on its own, and on a typical input only some of a block's neurons fire,
so SPD's minimality argument calls that split right (docs/toy_models.md). The idea of modular,
block-diagonal toys follows the LIB paper's modular MLPs (Bushnaq et al. 2024, arXiv:2405.10928).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from benchmark.registry import TOY_MODELS
from benchmark.toy import LinearSite, Mechanism, ToyModel, ToyModelSpec


class BlockMLPNet(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.W1 = nn.Parameter(torch.zeros(d_hidden, d_in))
        self.W2 = nn.Parameter(torch.zeros(d_out, d_hidden))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x @ self.W1.T) @ self.W2.T


class HandBuiltMLP(ToyModel):
    """Base of the hand-built ``y = W2 ReLU(W1 x)`` models (a :class:`BlockMLPNet`): their weight uses, and
    a task that is the network's own function."""

    def sites(self, model: nn.Module, inputs: Tensor) -> list[LinearSite]:
        return [LinearSite("W1", inputs), LinearSite("W2", torch.relu(inputs @ model.W1.T))]

    def loss(self, output: Tensor, inputs: Tensor) -> Tensor:
        """Hand-built, so the task is the network's own function: MSE to its outputs."""
        with torch.no_grad():
            labels = self.model(inputs.to(self.model.W1.device))
        return ((output - labels) ** 2).mean()

    @staticmethod
    def neuron_pieces(comps: dict[str, Tensor], neurons: Iterable[int]) -> list[dict[str, Tensor]]:
        """A mechanism's refinement into one piece per ReLU neuron j: its W1 row and W2 column (the smallest
        piece that acts on its own)."""
        pieces = []
        for j in neurons:
            row = torch.zeros_like(comps["W1"], dtype=torch.bool)
            col = torch.zeros_like(comps["W2"], dtype=torch.bool)
            row[j], col[:, j] = True, True
            pieces.append({"W1": torch.where(row, comps["W1"], 0.0), "W2": torch.where(col, comps["W2"], 0.0)})
        return pieces


class BlockMLP(HandBuiltMLP):
    def __init__(
        self,
        n_blocks: int = 4,
        d_in: int = 3,
        d_hidden: int = 4,
        d_out: int = 3,
        p_active: float = 0.25,
        seed: int = 0,
        name: str = "block_mlp",
    ):
        super().__init__()
        self.k, self.d_in, self.d_hidden, self.d_out, self.p = n_blocks, d_in, d_hidden, d_out, p_active
        self.activation_rate = p_active  # one Bernoulli per block, all-zero inputs kept
        self.spec = ToyModelSpec(
            name=name,
            tier=0,
            version="1",
            seed=seed,
            gt_status="exact",
            description=f"{n_blocks} independent ReLU MLPs ({d_in}->{d_hidden}->{d_out}) placed block-"
            f"diagonally; each block is one mechanism, active iff its inputs are non-zero (p={p_active}).",
            paper="hand-built; modular MLPs as in Bushnaq et al. 2024, arXiv:2405.10928",
            decomposed=("W1", "W2"),
        )

    def _blocks(self, k: int) -> tuple[slice, slice, slice]:
        return (
            slice(k * self.d_in, (k + 1) * self.d_in),
            slice(k * self.d_hidden, (k + 1) * self.d_hidden),
            slice(k * self.d_out, (k + 1) * self.d_out),
        )

    def make_model(self) -> nn.Module:
        return BlockMLPNet(self.k * self.d_in, self.k * self.d_hidden, self.k * self.d_out)

    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for k in range(self.k):
                i, h, o = self._blocks(k)
                model.W1[h, i] = torch.randn(self.d_hidden, self.d_in, generator=g) / self.d_in**0.5
                model.W2[o, h] = torch.randn(self.d_out, self.d_hidden, generator=g) / self.d_hidden**0.5
        return {"hand_built": True}

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        on = torch.rand(n, self.k, generator=generator) < self.p
        vals = torch.rand(n, self.k * self.d_in, generator=generator) * 2 - 1
        return vals * on.repeat_interleave(self.d_in, dim=1)

    def _masks(self, k: int, model: nn.Module) -> dict[str, Tensor]:
        i, h, o = self._blocks(k)
        m1 = torch.zeros_like(model.W1, dtype=torch.bool)
        m2 = torch.zeros_like(model.W2, dtype=torch.bool)
        m1[h, i] = True
        m2[o, h] = True
        return {"W1": m1, "W2": m2}

    def mechanisms(self, model: nn.Module) -> list[Mechanism]:
        out = []
        for k in range(self.k):
            mask = self._masks(k, model)
            comps = {n: torch.where(mask[n], getattr(model, n).detach(), 0.0) for n in ("W1", "W2")}
            _, h, _ = self._blocks(k)
            pieces = self.neuron_pieces(comps, range(h.start, h.stop))
            out.append(Mechanism(name=f"block{k}", support=mask, components=comps, refinement=pieces))
        return out

    def active(self, inputs: Tensor) -> Tensor:
        return inputs.reshape(inputs.shape[0], self.k, self.d_in).ne(0).any(dim=2)


TOY_MODELS.register("block_mlp", BlockMLP)
