"""What a method returns: components in parameter space (docs/design.md, Core contracts).

A component maps parameter names to tensors of that parameter's shape, or to :class:`LowRank` factors
that expand to it, over any subset of the decomposed parameters. Optional capabilities
(``attributions``, ``groups``) are None when a method cannot provide them; the metrics that need
them then report N/A.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


def flatten(per_param: dict[str, Tensor], names: tuple[str, ...], shapes: dict[str, torch.Size], k: int) -> Tensor:
    """Concatenate ``{param: Tensor[k, *shape]}`` into ``[k, D]`` (float64, CPU); missing params are zero.
    The one flattening of parameter-space objects (components, mechanisms, spans)."""
    parts = []
    for n in names:
        numel = math.prod(shapes[n])
        t = per_param.get(n)
        parts.append(
            torch.zeros(k, numel, dtype=torch.float64)
            if t is None
            else t.detach().to("cpu", torch.float64).reshape(k, numel)
        )
    return torch.cat(parts, dim=1)


class DecompositionError(ValueError):
    """A decomposition that breaks the contract (unknown parameter, wrong shape, NaN, ...)."""


@dataclass
class LowRank:
    """A matrix given as factors: ``left @ right`` with ``left [m, r]`` and ``right [r, n]``."""

    left: Tensor
    right: Tensor

    def dense(self) -> Tensor:
        return self.left @ self.right

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.left.shape[0], self.right.shape[-1]))


Component = dict[str, "Tensor | LowRank"]


@dataclass
class RunRecord:
    """Cost and settings of one decomposition run (filled by the method; the runner adds timing)."""

    wall_time_s: float | None = None
    peak_memory_mb: float | None = None
    steps: int | None = None  # optimisation steps actually taken
    stopped_early: bool = False  # stopped before its step budget because the budget's ``seconds`` ran out
    hparams: dict[str, Any] = field(default_factory=dict)
    # (step, training loss) pairs in step order, for methods that train: the converged check (benchmark.convergence)
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decomposition:
    components: list[Component]
    attributions: Callable[[Tensor], Tensor] | None = None  # inputs [batch, ...] -> float [batch, C]
    groups: list[list[int]] | None = None  # components that together form one mechanism
    faithful: bool = False  # True where the method claims the components sum to the weights
    # True where the attributions are causal importances in [0, 1] (the mask m = g + (1 - g) r of SPD and VPD):
    # the adversarial faithfulness metric then applies (benchmark.metrics.adversarial)
    importances: bool = False
    importance_scale: float = 1.0  # attributions x this are the importances (a stored decomposition's are relative)
    record: RunRecord = field(default_factory=RunRecord)

    def __len__(self) -> int:
        return len(self.components)

    def dense(self, i: int) -> dict[str, Tensor]:
        return {k: (v.dense() if isinstance(v, LowRank) else v) for k, v in self.components[i].items()}

    def attributions_on(self, inputs: Tensor) -> Tensor | None:
        """``|attributions(inputs)|`` as float64 ``[batch, C]`` on the CPU, checked for shape and finiteness;
        None where the method gives no attributions."""
        if self.attributions is None:
            return None
        with torch.no_grad():
            a = self.attributions(inputs)
        expect = (inputs.shape[0], len(self.components))
        if not isinstance(a, Tensor) or tuple(a.shape) != expect:
            got = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
            raise DecompositionError(f"attributions(inputs) returned {got}, expected shape {expect}")
        a = a.detach().to("cpu", torch.float64).abs()
        if not torch.isfinite(a).all():
            raise DecompositionError("attributions(inputs) returned NaN or infinite values")
        return a

    def flat(self, names: tuple[str, ...], shapes: dict[str, torch.Size]) -> Tensor:
        """All components as ``[C, D]`` float64 on CPU, over the parameters ``names`` in that order (zero
        where a component leaves a parameter out)."""
        C, per_param = len(self.components), {}
        for n in names:
            idx = [i for i in range(C) if n in self.components[i]]
            if idx:
                block = torch.zeros(C, *shapes[n], dtype=torch.float64)
                block[idx] = torch.stack([_dense64(self.components[i][n]) for i in idx])
                per_param[n] = block
        return flatten(per_param, names, shapes, C)

    def validate(self, shapes: dict[str, torch.Size]) -> None:
        """Raise :class:`DecompositionError` where the decomposition breaks the contract."""
        if not isinstance(self.components, list | tuple):
            raise DecompositionError(f"components must be a list, got {type(self.components).__name__}")
        if len(self.components) == 0:
            raise DecompositionError("the decomposition has no components")
        for i, comp in enumerate(self.components):
            if not isinstance(comp, dict) or not comp:
                raise DecompositionError(f"component {i} must be a non-empty dict parameter -> tensor")
            for name, v in comp.items():
                if name not in shapes:
                    raise DecompositionError(
                        f"component {i} names parameter {name!r}, which is not decomposed; "
                        f"decomposed parameters: {', '.join(shapes)}"
                    )
                if not isinstance(v, Tensor | LowRank):
                    raise DecompositionError(f"component {i}[{name!r}] is a {type(v).__name__}, not a tensor")
                if tuple(v.shape) != tuple(shapes[name]):
                    raise DecompositionError(
                        f"component {i}[{name!r}] has shape {tuple(v.shape)}, expected {tuple(shapes[name])}"
                    )
                dense = v.dense() if isinstance(v, LowRank) else v
                if not torch.isfinite(dense).all():
                    raise DecompositionError(f"component {i}[{name!r}] has NaN or infinite entries")
        if self.groups is not None:
            for g in self.groups:
                if not all(isinstance(j, int) and 0 <= j < len(self.components) for j in g):
                    raise DecompositionError(f"group {g} names components that do not exist")


def _dense64(v: Tensor | LowRank) -> Tensor:
    return (v.dense() if isinstance(v, LowRank) else v).detach().to("cpu", torch.float64)
