"""L3D's circuit-superposition toys (Chrisman, Bushnaq, Sharkey 2025, arXiv:2504.00194;
``docs/reference/l3d.md`` 2.2-2.3).

``y_hat = ReLU(W_out W_in x + b)`` (a linear hidden layer, ReLU on the output) trained to map x to x A,
A ~ U[0,3) fixed by the seed and stored with the weights (buffer ``A``). Inputs: TMS features
(p = 0.05, U[0,1)), all-zero rows dropped; in the higher-rank model features come in groups of 5 that
switch on together (one Bernoulli per group), magnitudes drawn per feature.

Training (L3D code): a fixed set of 10,000 inputs, AdamW lr 1e-3, weight decay 1e-3, MSE; the code
runs batch 32 on 4 processes (effective batch 128) for 1000 epochs. We keep batch 128 and the data
set but train 200 epochs (15,600 steps), shortened for CPU time; W_in, W_out ~ N(0,1), b = 0 (code).

Ground truth (the bias is not decomposed):
- ``tmcs_10-5-10``: one rank-1 mechanism per feature i, W_in[:, i] e_i^T (active iff x_i != 0), and
  W_out as one dense always-on mechanism (every feature's circuit writes through all of it).
- ``higher_rank_30-10-30``: one mechanism per group g, exactly W_in restricted to the group's columns,
  scored against its span: all matrices that read only the group's inputs and write only inside the
  hidden subspace the group writes to (col W_in[:, g], rank 5), 25 dimensions; W_out dense, always on.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from benchmark.registry import TOY_MODELS
from benchmark.toy import LinearSite, Mechanism, ToyModel, ToyModelSpec
from toy_models._common import ConfigKeyed, drop_zero_rows, sparse_features, train


class CircuitNet(nn.Module):
    def __init__(self, n_features: int, n_hidden: int):
        super().__init__()
        self.W_in = nn.Parameter(torch.zeros(n_hidden, n_features))
        self.W_out = nn.Parameter(torch.zeros(n_features, n_hidden))
        self.b = nn.Parameter(torch.zeros(n_features))
        self.register_buffer("A", torch.zeros(n_features, n_features))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x @ self.W_in.T @ self.W_out.T + self.b)


class CircuitSuperposition(ConfigKeyed, ToyModel):
    def __init__(
        self,
        n_features: int = 10,
        n_hidden: int = 5,
        group: int = 1,
        p_active: float = 0.05,
        n_data: int = 10_000,
        epochs: int = 200,
        batch_size: int = 128,
        max_coef: float = 3.0,
        seed: int = 0,
        name: str | None = None,
    ):
        super().__init__()
        self.n, self.h, self.group, self.p = n_features, n_hidden, group, p_active
        self.n_data, self.epochs, self.batch_size, self.max_coef = n_data, epochs, batch_size, max_coef
        self._config = {
            "n": n_features,
            "h": n_hidden,
            "group": group,
            "p": p_active,
            "n_data": n_data,
            "epochs": epochs,
            "batch_size": batch_size,
            "max_coef": max_coef,
        }
        self.drops_zero_inputs = True  # L3D's generator: P(group on | some group on), one Bernoulli per group
        self.activation_rate = p_active / (1 - (1 - p_active) ** (n_features // group))
        grouped = group > 1
        self.spec = ToyModelSpec(
            name=name
            or (
                f"higher_rank_{n_features}-{n_hidden}-{n_features}"
                if grouped
                else f"tmcs_{n_features}-{n_hidden}-{n_features}"
            ),
            tier=3 if grouped else 2,
            version="1",
            seed=seed,
            gt_status="exact",
            description=(
                f"L3D higher-rank circuits: ReLU(W_out W_in x + b) maps x to xA (A ~ U[0,{max_coef:g})), "
                f"{n_features} features in groups of {group} that switch on together (p={p_active}); one "
                f"rank-{group} mechanism per group (span of its W_in block), W_out dense always-on."
                if grouped
                else f"L3D circuit superposition: ReLU(W_out W_in x + b) maps {n_features} sparse features "
                f"(p={p_active}) through {n_hidden} hidden units to xA, A ~ U[0,{max_coef:g}); one rank-1 "
                "mechanism per feature in W_in, W_out dense always-on."
            ),
            paper="L3D arXiv:2504.00194",
            decomposed=("W_in", "W_out"),
        )

    @property
    def n_groups(self) -> int:
        return self.n // self.group

    def make_model(self) -> nn.Module:
        return CircuitNet(self.n, self.h)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return drop_zero_rows(lambda k: sparse_features(k, self.n, self.p, generator, group=self.group), n)

    def loss(self, output: Tensor, inputs: Tensor) -> Tensor:
        A = self.model.A.to(inputs.device)
        return ((output - inputs @ A) ** 2).mean()

    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            model.A.copy_(torch.rand(self.n, self.n, generator=g) * self.max_coef)
            model.W_in.copy_(torch.randn(model.W_in.shape, generator=g))
            model.W_out.copy_(torch.randn(model.W_out.shape, generator=g))
            model.b.zero_()
        data = self.sample(self.n_data, g)
        labels = data @ model.A
        per_epoch = self.n_data // self.batch_size
        order = torch.cat(
            [torch.randperm(self.n_data, generator=g)[: per_epoch * self.batch_size] for _ in range(self.epochs)]
        ).view(-1, self.batch_size)

        def batch(step: int) -> tuple[Tensor, Tensor]:
            idx = order[step]
            return data[idx], labels[idx]

        params = [model.W_in, model.W_out, model.b]
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-3)
        last = train(model, batch, lambda o, y: ((o - y) ** 2).mean(), len(order), opt)
        with torch.no_grad():
            x = self.sample(50_000, torch.Generator().manual_seed(seed + 10_000))
            y = x @ model.A
            final = float(((model(x) - y) ** 2).mean())
            zero = float((y**2).mean())
        return {"final_loss": final, "zero_output_loss": zero, "last_batch_loss": last, "steps": len(order)}

    def health(self, model: nn.Module, info: dict[str, Any]) -> str | None:
        """Every feature (group) must still be read: no W_in column block shorter than 0.3x the median."""
        norms = model.W_in.detach().norm(dim=0).view(self.n_groups, self.group).norm(dim=1)
        worst = int(norms.argmin())
        if norms[worst] < 0.3 * norms.median():
            return f"group {worst} lost: |W_in block| {norms[worst]:.3f}, median {norms.median():.3f}"
        return None

    def _mask(self, k: int) -> Tensor:
        mask = torch.zeros(self.h, self.n, dtype=torch.bool)
        mask[:, k * self.group : (k + 1) * self.group] = True
        return mask

    def mechanisms(self, model: nn.Module) -> list[Mechanism]:
        W_in = model.W_in.detach()
        out: list[Mechanism] = []
        for k in range(self.n_groups):
            mask = self._mask(k)
            comp = {"W_in": torch.where(mask, W_in, 0.0)}
            name = f"feature{k}" if self.group == 1 else f"group{k}"
            out.append(Mechanism(name=name, support={"W_in": mask}, components=comp))
        out.append(
            Mechanism(
                name="W_out_dense",
                support={"W_out": torch.ones_like(model.W_out, dtype=torch.bool)},
                components={"W_out": model.W_out.detach().clone()},
                always_on=True,
            )
        )
        return out

    def active(self, inputs: Tensor) -> Tensor:
        groups = inputs.reshape(inputs.shape[0], self.n_groups, self.group).ne(0).any(dim=2)
        on = torch.ones(inputs.shape[0], 1, dtype=torch.bool, device=inputs.device)
        return torch.cat([groups, on], dim=1)

    def sites(self, model: nn.Module, inputs: Tensor) -> list[LinearSite]:
        return [LinearSite("W_in", inputs), LinearSite("W_out", inputs @ model.W_in.T)]


TOY_MODELS.register("tmcs_10-5-10", CircuitSuperposition)
TOY_MODELS.register("higher_rank_30-10-30", lambda seed=0: CircuitSuperposition(30, 10, group=5, seed=seed))
