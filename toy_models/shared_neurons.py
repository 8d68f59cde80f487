"""Tier 0, hand-built: mechanisms that share every hidden neuron yet are exactly separable in
parameter space (our construction; it isolates what parameter decomposition claims over neuron-based
methods, cf. the polysemantic neurons of APD's resid MLP, arXiv:2501.14926).

y = W2 ReLU(W1 x) with n features and n neurons: feature i writes (positive weights) to neurons i and
i+1 (mod n), so each neuron serves two features; W2 = O W1^{-1} reads out y = O x (O random, seeded).
Inputs are non-negative (each feature on with p = 0.2, U[0,1)), so the ReLU is the identity on the
data and the network computes exactly y = sum_i x_i O[:, i].
Mechanism i: W1[:, i] e_i^T in W1 and O[:, i] d_i^T in W2 (d_i: row i of W1^{-1}, so d_i . W1[:, j] =
delta_ij). They sum to (W1, W2), and removing mechanism i leaves every input without feature i
unchanged (up to rounding) although the neurons it used stay in use.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from benchmark.registry import TOY_MODELS
from benchmark.toy import Mechanism, ToyModelSpec
from toy_models._common import ConfigKeyed, sparse_features
from toy_models.block_mlp import BlockMLPNet, HandBuiltMLP


class SharedNeurons(ConfigKeyed, HandBuiltMLP):
    def __init__(self, n_features: int = 6, d_out: int = 4, p_active: float = 0.2, seed: int = 0):
        super().__init__()
        self.n, self.d_out, self.p = n_features, d_out, p_active
        self.activation_rate = p_active  # independent features, all-zero inputs kept
        self._config = {"n": n_features, "d_out": d_out, "p": p_active}
        self.spec = ToyModelSpec(
            name="shared_neurons",
            tier=0,
            version="1",
            seed=seed,
            gt_status="exact",
            description=f"Hand-built ReLU MLP {n_features}->{n_features}->{d_out}: every neuron serves two "
            f"features, yet each feature's mechanism (its W1 column, and a dense W2 piece through the dual "
            f"basis) is exactly separable; p={p_active}, non-negative inputs.",
            paper="hand-built (this benchmark); polysemantic neurons as in APD arXiv:2501.14926",
            decomposed=("W1", "W2"),
        )

    def make_model(self) -> nn.Module:
        return BlockMLPNet(self.n, self.n, self.d_out)

    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)
        idx = torch.arange(self.n)
        W1 = torch.zeros(self.n, self.n, dtype=torch.float64)
        W1[idx, idx] = 0.5 + torch.rand(self.n, generator=g, dtype=torch.float64)
        W1[(idx + 1) % self.n, idx] = 0.5 + torch.rand(self.n, generator=g, dtype=torch.float64)
        O = torch.randn(self.d_out, self.n, generator=g, dtype=torch.float64)
        with torch.no_grad():
            model.W1.copy_(W1)
            model.W2.copy_(O @ torch.linalg.inv(W1))
        return {"hand_built": True, "cond_W1": float(torch.linalg.cond(W1))}

    def health(self, model: nn.Module, info: dict[str, Any]) -> str | None:
        if info["cond_W1"] > 100:
            return f"W1 is badly conditioned (cond {info['cond_W1']:.0f}); the dual pieces would be unstable"
        return None

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return sparse_features(n, self.n, self.p, generator)

    def mechanisms(self, model: nn.Module) -> list[Mechanism]:
        W1, W2 = model.W1.detach().double(), model.W2.detach().double()
        D = torch.linalg.inv(W1)  # rows: dual basis
        O = W2 @ W1
        out = []
        for i in range(self.n):
            c1 = torch.zeros_like(W1)
            c1[:, i] = W1[:, i]
            c2 = torch.outer(O[:, i], D[i])
            comps = {"W1": c1.float(), "W2": c2.float()}
            out.append(Mechanism(name=f"feature{i}", components=comps, support={"W1": c1 != 0, "W2": c2.abs() > 1e-9}))
        return out

    def active(self, inputs: Tensor) -> Tensor:
        return inputs != 0


TOY_MODELS.register("shared_neurons", SharedNeurons)
