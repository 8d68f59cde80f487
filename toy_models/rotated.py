"""Rotated variants: a toy model behind random orthogonal changes of basis (issue "toy ladder v2").

A fixed basis (the ``neuron`` row) scores on a toy whose mechanisms lie on its input or hidden basis, which
says more about the toy than about any method. A rotated variant folds a random orthogonal matrix, drawn
from the instance's seed, into every linear interface that has no privileged basis:

- ``in``: the input (the sampler returns Q_in x, and the first layer reads W Q_in^T);
- ``hid``: a linear bottleneck (TMS's hidden layer, the circuits' W_out W_in): R W on its write side,
  W R^T on its read side;
- ``out``: the output, where no nonlinearity follows it (the block MLPs): Q_out W.

ReLU layers keep their basis (a ReLU is not equivariant to rotations), and so do outputs read through a
ReLU (TMS, the circuits). The rotated network computes f'(Q_in x) = Q_out f(x) exactly; its mechanisms
are the base toy's, mapped by the same matrices (so they still sum to the weights, and removing one
still changes only the inputs that use it); its weights are the base toy's, transformed, so they need
no training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from benchmark.cache import WeightCache
from benchmark.registry import TOY_MODELS
from benchmark.toy import LinearSite, Mechanism, ToyModel, load_toy

SNAP = 1e-5  # relative size below which an input entry rotated back counts as zero (float32 rounding: ~1e-7)


@dataclass(frozen=True)
class Fold:
    """How one decomposed matrix, used as ``out = W @ in``, takes the rotations: W' = L W R^T, with L the
    rotation named ``left`` (None: identity) and R the one named ``right``."""

    left: str | None = None
    right: str | None = None


@dataclass(frozen=True)
class Plan:
    """Which rotation each decomposed matrix takes, and which rotate the inputs and outputs."""

    folds: dict[str, Fold]
    inputs: str | None = None
    outputs: str | None = None


def haar_orthogonal(d: int, generator: torch.Generator) -> Tensor:
    """A random orthogonal ``[d, d]`` matrix, uniform (Haar) over O(d)."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(d, dtype=torch.float64))


class RotatedToy(ToyModel):
    """``base`` (a registered toy model's name) behind the rotations of ``plan``, drawn from ``seed``.
    A diagnostic until it passes the headroom gate (``track`` is set per variant below)."""

    track = "diagnostic"

    def __init__(self, base: str, plan: Plan, seed: int = 0, name: str | None = None):
        super().__init__()
        self.base = TOY_MODELS.get(base)(seed=seed)
        self.base_name, self.plan = base, plan
        b = self.base.spec
        self.spec = replace(
            b,
            name=name or f"{base}-rot",
            version=f"{b.version}.rot1",
            description=f"{b.description} Behind random orthogonal changes of basis "
            f"({', '.join(sorted(self._axes()))}) drawn from the seed.",
        )
        for fact in ("locality", "locality_ratio", "ablation_moved_share", "activation_rate", "drops_zero_inputs"):
            setattr(self, fact, getattr(self.base, fact))
        self._rotations: dict[str, Tensor] | None = None
        self._cache: WeightCache | None = None

    def _axes(self) -> set[str]:
        names = {n for f in self.plan.folds.values() for n in (f.left, f.right) if n is not None}
        return names | {n for n in (self.plan.inputs, self.plan.outputs) if n is not None}

    # -- the base toy and the rotations ---------------------------------------------------------------
    def build(self, cache: WeightCache | None = None) -> ToyModel:
        self._cache = cache  # the base toy's weights come from (and go to) the same cache
        return super().build(cache)

    def _built_base(self) -> ToyModel:
        if self.base._model is None:
            self.base = load_toy(self.base_name, self._cache, seed=self.spec.seed)
        return self.base

    @property
    def rotations(self) -> dict[str, Tensor]:
        """``name -> [d, d]`` float64, drawn from the seed and the axis name (so one axis is reproducible
        whatever other axes exist)."""
        if self._rotations is None:
            shapes = {n: p.shape for n, p in self._built_base().model.named_parameters()}
            dims: dict[str, int] = {}
            for param, fold in self.plan.folds.items():
                for axis, d in ((fold.left, shapes[param][0]), (fold.right, shapes[param][1])):
                    if axis is not None and dims.setdefault(axis, d) != d:
                        raise ValueError(f"{self.spec.name}: axis {axis!r} has sizes {dims[axis]} and {d}")
            out = {}
            for axis, d in sorted(dims.items()):
                digest = hashlib.sha256(f"{self.spec.seed}:{axis}".encode()).digest()
                out[axis] = haar_orthogonal(d, torch.Generator().manual_seed(int.from_bytes(digest[:6], "big")))
            self._rotations = out
        return self._rotations

    def _q(self, axis: str | None) -> Tensor | None:
        return None if axis is None else self.rotations[axis]

    def fold(self, param: str, t: Tensor) -> Tensor:
        """``t`` (a tensor of the parameter's shape, or ``[k, *shape]``) mapped as the parameter is."""
        return self._apply(param, t.to(torch.float64), abs_=False).to(t.dtype)

    def fold_mask(self, param: str, mask: Tensor) -> Tensor:
        """The support of every tensor supported on ``mask``, after the fold (dense along rotated axes)."""
        return self._apply(param, mask.to(torch.float64), abs_=True) > 0

    def _apply(self, param: str, t: Tensor, abs_: bool) -> Tensor:
        """L t R^T for the parameter's fold (with |L| and |R| where ``abs_``: which entries can be non-zero)."""
        f = self.plan.folds.get(param)
        if f is None:
            return t
        if f.left is not None:
            q = self.rotations[f.left]
            t = (q.abs() if abs_ else q) @ t
        if f.right is not None:
            q = self.rotations[f.right]
            t = t @ (q.abs() if abs_ else q).T
        return t

    # -- the ToyModel contract ------------------------------------------------------------------------
    def make_model(self) -> nn.Module:
        return self.base.make_model()

    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        base = self._built_base()
        model.load_state_dict(base.model.state_dict())
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self.fold(name, p.detach()))
        return {"base": self.base_name, "base_weights_sha256": base.weights_sha256(), "axes": sorted(self.rotations)}

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        x = self.base.sample(n, generator)
        q = self._q(self.plan.inputs)
        return x if q is None else (x.to(torch.float64) @ q.T).to(x.dtype)

    def to_base_inputs(self, inputs: Tensor) -> Tensor:
        q = self._q(self.plan.inputs)
        return inputs if q is None else (inputs.to(torch.float64) @ q.to(inputs.device)).to(inputs.dtype)

    def to_base_outputs(self, outputs: Tensor) -> Tensor:
        q = self._q(self.plan.outputs)
        return outputs if q is None else outputs @ q.to(outputs).to(outputs.device)

    def loss(self, output: Tensor, inputs: Tensor) -> Tensor:
        return self.base.loss(self.to_base_outputs(output), self.to_base_inputs(inputs))

    def mechanisms(self, model: nn.Module) -> list[Mechanism]:
        out = []
        for m in self._built_base().ground_truth.mechanisms:
            out.append(
                Mechanism(
                    name=m.name,
                    support={k: self.fold_mask(k, v) for k, v in m.support.items()},
                    components=None if m.components is None else {k: self.fold(k, v) for k, v in m.components.items()},
                    subspace=None
                    if m.subspace is None
                    else {k: torch.stack([self.fold(k, row) for row in v]) for k, v in m.subspace.items()},
                    always_on=m.always_on,
                    refinement=None
                    if m.refinement is None
                    else [{k: self.fold(k, v) for k, v in piece.items()} for piece in m.refinement],
                )
            )
        return out

    def active(self, inputs: Tensor) -> Tensor:
        """The base toy's ``active`` on the inputs rotated back, where an entry that the round trip left at
        float rounding (below ``SNAP`` of its row's largest) counts as the zero it was."""
        x = self.to_base_inputs(inputs)
        if self.plan.inputs is not None:
            top = x.abs().amax(dim=-1, keepdim=True)
            x = torch.where(x.abs() <= SNAP * top, torch.zeros_like(x), x)
        return self._built_base().active(x)

    def sites(self, model: nn.Module, inputs: Tensor) -> list[LinearSite]:
        return self.base.sites(model, inputs)


BLOCK = Plan({"W1": Fold(right="in"), "W2": Fold(left="out")}, inputs="in", outputs="out")
CIRCUIT = Plan({"W_in": Fold(left="hid", right="in"), "W_out": Fold(right="hid")}, inputs="in")
TIED_TMS = Plan({"W": Fold(left="hid")})
TIED_TMS_ID = Plan({"W": Fold(left="hid"), "hidden_layer": Fold(left="hid", right="hid")})

VARIANTS = {
    "block_mlp": BLOCK,
    "shared_neurons": BLOCK,
    "tmcs_10-5-10": CIRCUIT,
    "higher_rank_30-10-30": CIRCUIT,
    "tms_5-2": TIED_TMS,
    "tms_40-10": TIED_TMS,
    "parallel_tms": TIED_TMS,
    "tms_5-2-id": TIED_TMS_ID,
    "tms_40-10-id": TIED_TMS_ID,
    "tms_5-2-untied": CIRCUIT,
    "shared_circuits": BLOCK,
    "gated_circuits": BLOCK,
}


HEADLINE = {"shared_circuits", "gated_circuits"}  # the variants that pass the headroom gate (docs/toy_models.md)


def _factory(base: str, plan: Plan):  # noqa: ANN202
    def make(seed: int = 0) -> RotatedToy:
        toy = RotatedToy(base, plan, seed)
        toy.track = "headline" if base in HEADLINE else "diagnostic"
        return toy

    return make


for _base, _plan in VARIANTS.items():
    TOY_MODELS.register(f"{_base}-rot", _factory(_base, _plan))
