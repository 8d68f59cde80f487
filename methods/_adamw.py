"""AdamW, computed exactly as ``torch.optim.AdamW`` computes it on a CPU, without ``torch.optim``.

SPD, SPD main and VPD train with the paper code's AdamW, L3D with Adam (the same with no weight decay). On a
CPU torch's optimiser runs, per parameter, the same in-place tensor operations as here, with the bias
corrections in Python floats (its ``foreach`` path loops over the same per-tensor operations). Around them it
spends about 0.1 ms a step on TMS 5-2 (state lookups, step counters held as tensors, checks), and building the
first one in a process imports ``torch._dynamo`` (about 1 s). This class runs those
operations in the same order on the same operands, so the parameters come out the same bit for bit
(``tests/test_adamw.py`` compares them with torch's optimiser). As in torch's, a parameter without a gradient
is skipped and its step count stays.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class AdamW:
    """``torch.optim.AdamW(params, lr, betas, eps, weight_decay)``; set :attr:`lr` before a step."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        self.params = list(params)
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = [0] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        lr, (b1, b2), wd = self.lr, self.betas, self.weight_decay
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                continue
            m, v = self.exp_avg[i], self.exp_avg_sq[i]
            self.steps[i] += 1
            step = float(self.steps[i])
            if wd != 0:
                p.mul_(1 - lr * wd)
            m.lerp_(grad, 1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (v.sqrt() / (1 - b2**step) ** 0.5).add_(self.eps)
            p.addcdiv_(m, denom, value=-(lr / (1 - b1**step)))
