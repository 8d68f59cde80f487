"""Shared pieces of the toy-model zoo: sparse-feature samplers and a seeded training loop."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def sparse_features(
    n: int, n_features: int, p: float, generator: torch.Generator, *, signed: bool = False, group: int = 1
) -> Tensor:
    """TMS-style features: each active with probability ``p`` (per group of ``group`` features that switch
    on together), value U[0,1) (or U[0,1) times a random sign when ``signed``), else 0."""
    if n_features % group:
        raise ValueError(f"{n_features} features do not split into groups of {group}")
    on = torch.rand(n, n_features // group, generator=generator) < p
    vals = torch.rand(n, n_features, generator=generator)
    if signed:
        vals = vals * (torch.randint(0, 2, (n, n_features), generator=generator) * 2 - 1)
    return vals * on.repeat_interleave(group, dim=1)


def drop_zero_rows(draw: Callable[[int], Tensor], n: int) -> Tensor:
    """``n`` rows from ``draw(k)`` with every all-zero row dropped and redrawn (L3D's generator,
    ``docs/reference/l3d.md`` 2). Draws whole batches, so the result depends only on the generator state."""
    kept: list[Tensor] = []
    have = 0
    while have < n:
        x = draw(max(2 * (n - have), 64))
        x = x[x.ne(0).any(dim=1)]
        kept.append(x)
        have += x.shape[0]
    return torch.cat(kept)[:n]


def train(
    model: Callable[[Tensor], Tensor],
    batches: Callable[[int], tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    steps: int,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> float:
    """Plain deterministic training loop: ``batches(step) -> (inputs, labels)``; returns the last loss."""
    loss = torch.tensor(float("nan"))
    with torch.enable_grad():
        for step in range(steps):
            x, y = batches(step)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
    return float(loss.detach())


class ConfigKeyed:
    """Mixin for a :class:`~benchmark.toy.ToyModel` whose hyperparameters live in ``self._config``: a model
    built with other hyperparameters than its registered name's gets its own cache key (a hash of them), so
    a shortened or modified run can never overwrite, or be read as, the registered model's weights."""

    _config: dict

    @property
    def cache_key(self) -> str:
        import hashlib

        from benchmark.registry import TOY_MODELS, RegistryError

        base = super().cache_key  # type: ignore[misc]
        spec = self.spec  # type: ignore[attr-defined]
        try:
            canon = TOY_MODELS.get(spec.name)(seed=spec.seed)
        except (RegistryError, TypeError):
            canon = None
        if canon is not None and type(canon) is type(self) and getattr(canon, "_config", None) == self._config:
            return base
        return f"{base}-{hashlib.sha256(repr(sorted(self._config.items())).encode()).hexdigest()[:10]}"
