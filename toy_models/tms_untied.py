"""Untied TMS (issue "toy ladder v2"): x_hat = ReLU(W_out W_in x + b), the TMS task with separate read-in
and read-out matrices, beside the tied models of ``toy_models/tms.py`` (Elhage et al. 2022 discuss both;
the APD and SPD papers use the tied one).

Trained with the tied TMS recipe (AdamW, weight decay 0.01, lr 5e-3, 10k steps, batch 1024). An untied
network drops features on many seeds (measured with a scratch loop: 1 to 4 of 5 features lost on seeds 1-4); the
health check moves to the next seed until every feature reconstructs itself.
Ground truth: one mechanism per feature c, exact: W_in's column c and W_out's row c (its read-out). They
sum to the weights; removing one changes only output c on inputs without feature c (the read-out
locality of tied TMS). Unlike the tied model, the input can be rotated (``-rot``), since no ReLU reads it.
A diagnostic: its features are still the data's independent components, so the data-only row solves it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from benchmark.registry import TOY_MODELS
from benchmark.toy import LinearSite, Mechanism, ToyModelSpec
from toy_models.tms import TMS


class UntiedTMSNet(nn.Module):
    def __init__(self, n_features: int, n_hidden: int):
        super().__init__()
        self.W_in = nn.Parameter(torch.zeros(n_hidden, n_features))
        self.W_out = nn.Parameter(torch.zeros(n_features, n_hidden))
        self.b = nn.Parameter(torch.zeros(n_features))

    def hidden(self, x: Tensor) -> Tensor:
        return x @ self.W_in.T

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.hidden(x) @ self.W_out.T + self.b)


class UntiedTMS(TMS):
    track = "diagnostic"

    def __init__(self, n_features: int = 5, n_hidden: int = 2, seed: int = 0, **kw: Any):
        super().__init__(n_features, n_hidden, seed=seed, name=f"tms_{n_features}-{n_hidden}-untied", **kw)
        self.spec = ToyModelSpec(
            name=self.spec.name,
            tier=1,
            version="1",
            seed=seed,
            gt_status="exact",
            description=f"Untied TMS {n_features}-{n_hidden}: x_hat = ReLU(W_out W_in x + b); one mechanism per "
            "feature: its W_in column and its W_out row.",
            paper="Elhage et al. 2022 (untied TMS); trained with the SPD paper's TMS recipe",
            decomposed=("W_in", "W_out"),
        )

    def make_model(self) -> nn.Module:
        return UntiedTMSNet(self.n_features, self.n_hidden)

    def init_weights(self, model: nn.Module, g: torch.Generator) -> None:
        """Xavier-normal W_in and W_out (as the tied W), zero bias; then the tied recipe trains them."""
        std = (2 / (self.n_features + self.n_hidden)) ** 0.5
        with torch.no_grad():
            model.W_in.copy_(torch.randn(model.W_in.shape, generator=g) * std)
            model.W_out.copy_(torch.randn(model.W_out.shape, generator=g) * std)
            model.b.zero_()

    def health(self, model: nn.Module, info: dict[str, Any]) -> str | None:
        """Every feature must reconstruct itself: x = e_c gives output c above 0.5."""
        with torch.no_grad():
            own = model(torch.eye(self.n_features)).diagonal()
        worst = int(own.argmin())
        return None if own[worst] > 0.5 else f"feature {worst} lost: e_{worst} reconstructs to {own[worst]:.3f}"

    def mechanisms(self, model: nn.Module) -> list[Mechanism]:
        W_in, W_out = model.W_in.detach(), model.W_out.detach()
        out = []
        for c in range(self.n_features):
            col = torch.zeros_like(W_in, dtype=torch.bool)
            row = torch.zeros_like(W_out, dtype=torch.bool)
            col[:, c], row[c] = True, True
            comps = {"W_in": torch.where(col, W_in, 0.0), "W_out": torch.where(row, W_out, 0.0)}
            out.append(Mechanism(name=f"feature{c}", support={"W_in": col, "W_out": row}, components=comps))
        return out

    def sites(self, model: nn.Module, inputs: Tensor) -> list[LinearSite]:
        return [LinearSite("W_in", inputs), LinearSite("W_out", model.hidden(inputs))]


TOY_MODELS.register("tms_5-2-untied", UntiedTMS)
