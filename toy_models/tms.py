"""Toy models of superposition (TMS): x_hat = ReLU(W^T W x + b) with tied weights.

Elhage et al. 2022; the settings are those of the APD and SPD papers (Braun et al. 2025,
arXiv:2501.14926; Bushnaq et al. 2025, arXiv:2506.20790), see ``docs/reference/apd_spd.md`` 1.1:
each feature is active with probability 0.05 with value U[0,1]; MSE autoencoding loss; AdamW (weight
decay 0.01), constant lr 5e-3 for 10k steps (SPD paper; APD's code uses 5k steps with linear decay),
batch 1024 (5-2) or 8192 (40-10). W is xavier-normal initialised and b starts at 0 (APD code).

Ground truth: one rank-1 mechanism per feature c, W[:, c] e_c^T (the tied read-out is the same
parameter, so its transpose comes with it); the bias b is not decomposed (kept fixed, always on).

Identity variants (``tms_5-2-id``, ``tms_40-10-id``; SPD paper, TMS with a frozen hidden identity):
x_hat = ReLU(W^T H W x + b) with H = I (m1 x m1) frozen during training and decomposed. Since H = I the
function and the training are those of plain TMS. H's ground truth is one always-on mechanism, I itself,
scored like the dense W_out of the circuit toys. SPD returns it as m1 rank-1 pieces ("they must sum to
I") in a basis of its choice; no finite list of pieces can declare every such split, so the pieces are
credited through the scorer's co-activation grouping (docs/metrics.md, "Grouping levels"), not as a
refinement. (Until scoring v2 each of m1 pieces was scored against the span of all m1 x m1 matrices,
where any matrix on H, random ones included, reached |cos| 1.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from benchmark.registry import TOY_MODELS
from benchmark.toy import LinearSite, Mechanism, ToyModel, ToyModelSpec
from toy_models._common import ConfigKeyed


class TMSNet(nn.Module):
    def __init__(self, n_features: int, n_hidden: int):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(n_hidden, n_features))
        self.b = nn.Parameter(torch.zeros(n_features))

    def hidden(self, x: Tensor) -> Tensor:
        return x @ self.W.T

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.hidden(x) @ self.W + self.b)


class TMS(ConfigKeyed, ToyModel):
    locality = "readout"  # removing W[:, c] also removes output c's tied read-out of the hidden state
    ablation_moved_share = 0.75  # a small x_c can stay under output c's negative bias

    def __init__(
        self,
        n_features: int = 5,
        n_hidden: int = 2,
        p_active: float = 0.05,
        steps: int = 10_000,
        batch_size: int = 1024,
        lr: float = 5e-3,
        seed: int = 0,
        tier: int = 1,
        name: str | None = None,
    ):
        super().__init__()
        self.n_features, self.n_hidden, self.p = n_features, n_hidden, p_active
        self.steps, self.batch_size, self.lr = steps, batch_size, lr
        self.activation_rate = p_active  # independent features, all-zero inputs kept
        self._config = {
            "n_features": n_features,
            "n_hidden": n_hidden,
            "p": p_active,
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
        }
        self.spec = ToyModelSpec(
            name=name or f"tms_{n_features}-{n_hidden}",
            tier=tier,
            version="1",
            seed=seed,
            gt_status="exact",
            description=f"TMS {n_features}-{n_hidden}: x_hat = ReLU(W^T W x + b), {n_features} sparse features "
            f"(p={p_active}, U[0,1]) in {n_hidden} dimensions; one rank-1 mechanism per feature.",
            paper="Elhage et al. 2022; APD arXiv:2501.14926; SPD arXiv:2506.20790",
            decomposed=("W",),
        )

    def make_model(self) -> nn.Module:
        return TMSNet(self.n_features, self.n_hidden)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        on = torch.rand(n, self.n_features, generator=generator) < self.p
        return torch.rand(n, self.n_features, generator=generator) * on

    def loss(self, output: Tensor, inputs: Tensor) -> Tensor:
        return ((inputs.abs() - output) ** 2).mean()

    def init_weights(self, model: nn.Module, g: torch.Generator) -> None:
        """Xavier-normal W and a zero bias (APD code)."""
        with torch.no_grad():
            model.W.copy_(torch.randn(model.W.shape, generator=g) * (2 / sum(model.W.shape)) ** 0.5)
            model.b.zero_()

    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)
        self.init_weights(model, g)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=0.01)
        loss = torch.tensor(float("nan"))
        with torch.enable_grad():
            for _ in range(self.steps):
                x = self.sample(self.batch_size, g)
                loss = self.loss(model(x), x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            x = self.sample(50_000, torch.Generator().manual_seed(seed + 10_000))
            final = float(self.loss(model(x), x))
        return {"final_loss": final, "last_batch_loss": float(loss.detach()), "steps": self.steps}

    def health(self, model: nn.Module, info: dict[str, Any]) -> str | None:
        """Every feature must keep a column of W: none shorter than half the median column norm."""
        norms = model.W.detach().norm(dim=0)
        weakest = int(norms.argmin())
        if norms[weakest] < 0.5 * norms.median():
            return f"feature {weakest} lost: |W[:, {weakest}]| = {norms[weakest]:.3f}, median {norms.median():.3f}"
        return None

    def mechanisms(self, model: nn.Module) -> list[Mechanism]:
        W = model.W.detach()
        out = []
        for c in range(self.n_features):
            mask = torch.zeros_like(W, dtype=torch.bool)
            mask[:, c] = True
            out.append(Mechanism(name=f"feature{c}", support={"W": mask}, components={"W": torch.where(mask, W, 0.0)}))
        return out

    def active(self, inputs: Tensor) -> Tensor:
        return inputs != 0

    def sites(self, model: nn.Module, inputs: Tensor) -> list[LinearSite]:
        return [LinearSite("W", inputs), LinearSite("W", model.hidden(inputs), transposed=True)]


class TMSIdNet(TMSNet):
    """TMS with a frozen square matrix ``hidden`` (the identity) between the tied layers."""

    def __init__(self, n_features: int, n_hidden: int):
        super().__init__(n_features, n_hidden)
        self.hidden_layer = nn.Parameter(torch.eye(n_hidden), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.hidden(x) @ self.hidden_layer.T @ self.W + self.b)


class TMSId(TMS):
    """TMS with a frozen hidden identity (SPD paper; ``docs/reference/apd_spd.md`` 1.1, ID variant)."""

    def __init__(self, n_features: int = 5, n_hidden: int = 2, batch_size: int = 1024, seed: int = 0, **kw: Any):
        super().__init__(
            n_features, n_hidden, batch_size=batch_size, seed=seed, tier=2, name=f"tms_{n_features}-{n_hidden}-id", **kw
        )
        self.spec = ToyModelSpec(
            name=self.spec.name,
            tier=2,
            version="1",
            seed=seed,
            gt_status="exact",
            description=f"TMS {n_features}-{n_hidden} with a frozen {n_hidden}x{n_hidden} identity between the "
            f"tied layers: {n_features} sparse rank-1 mechanisms in W plus {n_hidden} dense always-on rank-1 "
            "pieces of the identity (any basis; scored against their span).",
            paper="SPD arXiv:2506.20790 (TMS + identity); Elhage et al. 2022",
            decomposed=("W", "hidden_layer"),
        )

    def make_model(self) -> nn.Module:
        return TMSIdNet(self.n_features, self.n_hidden)

    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        model.hidden_layer.requires_grad_(False)  # frozen: the optimiser in TMS.fit skips it (no grad)
        info = super().fit(model, seed)
        if not torch.equal(model.hidden_layer, torch.eye(self.n_hidden)):
            raise RuntimeError("the frozen identity changed during training")
        return info

    def mechanisms(self, model: nn.Module) -> list[Mechanism]:
        out = super().mechanisms(model)
        out.append(
            Mechanism(
                name="identity",
                support={"hidden_layer": torch.ones_like(model.hidden_layer, dtype=torch.bool)},
                components={"hidden_layer": model.hidden_layer.detach().clone()},
                always_on=True,
            )
        )
        return out

    def active(self, inputs: Tensor) -> Tensor:
        on = torch.ones(inputs.shape[0], 1, dtype=torch.bool, device=inputs.device)
        return torch.cat([inputs != 0, on], dim=1)

    def sites(self, model: nn.Module, inputs: Tensor) -> list[LinearSite]:
        h = model.hidden(inputs)
        return [
            LinearSite("W", inputs),
            LinearSite("hidden_layer", h),
            LinearSite("W", h @ model.hidden_layer.T, transposed=True),
        ]


TOY_MODELS.register("tms_5-2", TMS)
TOY_MODELS.register("tms_40-10", lambda seed=0: TMS(40, 10, batch_size=8192, seed=seed))
TOY_MODELS.register("tms_5-2-id", TMSId)
TOY_MODELS.register("tms_40-10-id", lambda seed=0: TMSId(40, 10, batch_size=8192, seed=seed))
