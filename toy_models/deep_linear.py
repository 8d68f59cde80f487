"""Tier 0, diagnostic: deep linear networks of identity layers (hand-built, exact by construction).

The network is L bias-free D x D linear layers, every one the identity, read out through a sharpened softmax:
``y = softmax(beta W_{L-1} ... W_1 W_0 x)`` with ``beta = 10``. Nothing is trained; the weights are set by
construction. Each input has exactly k of its D coordinates on (which ones uniform), each U[0, 1], the rest 0.
The task is the network's own function, compared as output distributions: ``loss`` is KL(target || output).
This follows the ``deep_linear`` experiment of the Goodfire parameter-decomposition repository
(experiments/deep_linear; used there with SPD, arXiv:2506.20790, and VPD), whose configuration is L = 30,
D = 50, k = 5 and whose reconstruction loss is the same KL divergence; the sizes here are ours, small enough
for a CPU, with the reference size kept as ``deep_linear_30x50``.

Ground truth. With identity layers and inputs sparse in the coordinate basis, coordinate i travels alone
through the whole chain: the reference counts one rank-1 piece e_i e_i^T per dimension per layer (D x L
pieces). Here mechanism i is the cross-layer set {e_i e_i^T in every layer}, active exactly when x_i != 0,
and its declared ``refinement`` is those L per-layer pieces, so a method that splits per matrix, as SPD and
VPD do, scores as if it had returned the mechanism (docs/metrics.md, "Refinements"). Why cross-layer: the
L pieces of one dimension are used on exactly the same inputs, so as separate mechanisms they would have
identical ``active()`` columns, and removing any one of them does what removing all of them does (coordinate
i stops at that layer, output i's logit falls to 0). Co-activation cannot tell them apart; the scorer's
grouping joins components that fire together, so per-layer mechanisms would turn even the oracle's
attributed pieces into merges. One mechanism per dimension is what the contract can test and score
exactly: the components sum to the weights (diag(W_l) = W_l), and removing mechanism i changes no output on
an input with x_i = 0 (exact locality).

The ``-rot`` variants put a random orthogonal change of basis Q_l, drawn from the instance seed, on the input
and on every hidden space between layers (``toy_models/rotated.py``): the sampler returns Q_0 x, layer l
becomes Q_{l+1} Q_l^T, and the last layer Q_{L-1}^T, since the softmax makes the output basis privileged and
the output is not rotated. The function is exactly y(Q_0 x) = softmax(beta x), and mechanism i becomes
{Q_{l+1} e_i e_i^T Q_l^T}, refinement likewise. The inputs stay sparse in the rotated basis Q_0 e_i, so the
data's independent components are the mechanisms' directions at every layer: a data-only method (ICA of
each layer's inputs) finds them, and no variant passes the headroom gate (docs/toy_models.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from benchmark.registry import TOY_MODELS
from benchmark.toy import LinearSite, Mechanism, ToyModel, ToyModelSpec
from toy_models._common import ConfigKeyed
from toy_models.rotated import Fold, Plan, RotatedToy

BETA = 10.0  # the softmax sharpness of the reference


class DeepLinearNet(nn.Module):
    """``softmax(beta * W_{L-1} ... W_0 x)``, the layers bias-free ``D x D`` parameters ``W0`` .. ``W{L-1}``."""

    def __init__(self, n_layers: int, d: int, beta: float = BETA):
        super().__init__()
        self.n_layers, self.beta = n_layers, beta
        for layer in range(n_layers):
            setattr(self, f"W{layer}", nn.Parameter(torch.zeros(d, d)))

    def layers(self) -> list[Tensor]:
        return [getattr(self, f"W{layer}") for layer in range(self.n_layers)]

    def hidden(self, x: Tensor) -> list[Tensor]:
        """The input of every layer: ``[x, W0 x, W1 W0 x, ...]`` (L tensors)."""
        out = [x]
        for W in self.layers()[:-1]:
            out.append(out[-1] @ W.T)
        return out

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for W in self.layers():
            h = h @ W.T
        return torch.softmax(self.beta * h, dim=-1)


class DeepLinear(ConfigKeyed, ToyModel):
    """``n_layers`` identity layers of width ``d``, ``k`` coordinates on per input (U[0, 1]), softmax(beta x)."""

    track = "diagnostic"  # the coordinate basis (and, rotated, ICA) solves it: docs/toy_models.md
    # every other fact keeps its strict default: exact locality, and removing mechanism i moves the output on
    # 0.97-0.98 (worst dimension) of the inputs that use it (a small x_i beside a large x_j barely moves it)

    def __init__(
        self,
        n_layers: int = 4,
        d: int = 10,
        k: int = 2,
        beta: float = BETA,
        seed: int = 0,
        name: str = "deep_linear_4x10",
    ):
        super().__init__()
        if n_layers < 2:
            raise ValueError(f"deep_linear needs at least 2 layers (a cross-layer refinement), not {n_layers}")
        if not 1 <= k <= d:
            raise ValueError(f"k must be in 1..{d}, not {k}")
        self.n_layers, self.d, self.k, self.beta = n_layers, d, k, beta
        self._config = {"n_layers": n_layers, "d": d, "k": k, "beta": beta}
        self.activation_rate = k / d  # exactly k of d coordinates on, chosen uniformly
        self.spec = ToyModelSpec(
            name=name,
            tier=0,
            version="1",
            seed=seed,
            gt_status="exact",
            description=f"{n_layers} identity layers of width {d} (no biases) read out by softmax({beta:g} x); "
            f"exactly {k} of {d} input coordinates on, each U[0,1]. Mechanism i: e_i e_i^T in every layer, "
            f"active iff x_i != 0 (refinement: one rank-1 piece per layer).",
            paper="Goodfire parameter-decomposition repository, experiments/deep_linear (L=30, D=50, k=5); "
            "used with SPD (arXiv:2506.20790) and VPD",
            decomposed=tuple(f"W{layer}" for layer in range(n_layers)),
        )

    def make_model(self) -> nn.Module:
        return DeepLinearNet(self.n_layers, self.d, self.beta)

    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        with torch.no_grad():
            for W in model.layers():
                W.copy_(torch.eye(self.d))
        return {"hand_built": True}

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        order = torch.rand(n, self.d, generator=generator).argsort(dim=1)  # a uniform random order per row
        on = torch.zeros(n, self.d, dtype=torch.bool).scatter_(1, order[:, : self.k], True)
        return torch.rand(n, self.d, generator=generator) * on

    def loss(self, output: Tensor, inputs: Tensor) -> Tensor:
        """KL(target || output) between output distributions, the target being the network's own output
        (the reference's reconstruction loss), averaged over the batch."""
        with torch.no_grad():
            target = self.model(inputs.to(self.model.W0.device))
        logs = target.clamp_min(1e-30).log() - output.clamp_min(1e-30).log()
        return (target * logs).sum(dim=-1).mean()

    def mechanisms(self, model: nn.Module) -> list[Mechanism]:
        out = []
        for i in range(self.d):
            support, comps = {}, {}
            for layer, W in enumerate(model.layers()):
                mask = torch.zeros(self.d, self.d, dtype=torch.bool)
                mask[i, i] = True
                name = f"W{layer}"
                support[name] = mask
                comps[name] = torch.where(mask, W.detach(), 0.0)
            pieces = [{n: c} for n, c in comps.items()]  # e_i e_i^T in one layer: the reference's pieces
            out.append(Mechanism(name=f"dim{i}", support=support, components=comps, refinement=pieces))
        return out

    def active(self, inputs: Tensor) -> Tensor:
        return inputs.ne(0)

    def sites(self, model: nn.Module, inputs: Tensor) -> list[LinearSite]:
        return [LinearSite(f"W{layer}", h) for layer, h in enumerate(model.hidden(inputs))]


def rotation_plan(n_layers: int) -> Plan:
    """A rotation ``h{l}`` on the input of every layer l (``h0``: the network's input); layer l becomes
    Q_{l+1} W_l Q_l^T, the last Q_{L-1} only on its read side (the softmax output keeps its basis)."""
    folds = {
        f"W{layer}": Fold(left=f"h{layer + 1}" if layer + 1 < n_layers else None, right=f"h{layer}")
        for layer in range(n_layers)
    }
    return Plan(folds, inputs="h0")


SIZES = {  # name -> (layers, width, active coordinates per input)
    "deep_linear_4x10": (4, 10, 2),
    "deep_linear_8x20": (8, 20, 2),
    "deep_linear_30x50": (30, 50, 5),  # the reference's own size; scoring a method on it is slow (docs)
}
ROTATED = ("deep_linear_4x10", "deep_linear_8x20")


def _plain(name: str):  # noqa: ANN202
    n_layers, d, k = SIZES[name]

    def make(seed: int = 0) -> DeepLinear:
        return DeepLinear(n_layers, d, k, seed=seed, name=name)

    return make


def _rotated(name: str):  # noqa: ANN202
    def make(seed: int = 0) -> RotatedToy:
        toy = RotatedToy(name, rotation_plan(SIZES[name][0]), seed)
        toy.track = "diagnostic"  # ICA of each layer's inputs recovers the rotated pieces (docs/toy_models.md)
        return toy

    return make


for _name in SIZES:
    TOY_MODELS.register(_name, _plain(_name))
for _name in ROTATED:
    TOY_MODELS.register(f"{_name}-rot", _rotated(_name))
