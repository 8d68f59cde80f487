"""Several SPD runs of one network trained as one batched model (seeds trained together).

For a toy model the SPD step is dominated by Python and kernel-launch overhead, not arithmetic, so N seeds
stacked along a leading instance dimension cost little more than one. Each run keeps its own
:class:`~methods._spd_core.SPDTrainer` (its subcomponents, CI MLPs, generators and optimizer, built exactly as
when it runs alone); a step concatenates the runs' batches, runs the target once on all rows, stacks the
runs' parameters and computes every loss term per run with the same operations on one more dimension. The
runs share nothing but the tensors' memory, so each gives the same decomposition, bit for bit, as alone
(``tests/test_seed_groups.py`` checks it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from methods._adamw import AdamW
from methods._seed_groups import ROWS_ALIGN, rows_aligned
from methods._spd_core import SPDTrainer, TrainLog, lower_leaky_hard_sigmoid, upper_leaky_hard_sigmoid
from methods._spd_sites import run_sites

#: The most hidden-layer elements of the stacked CI MLPs (runs x batch x sites x C x d_gate) a group may have.
#: Past it stacking costs more than the runs one after another (TMS 40-10, 3 runs, 20 M: 3.9x one run's step,
#: where TMS 5-2, 3 runs, 2 M: 2.6x; docs/running.md): the step is arithmetic, and large temporaries are fresh
#: memory maps on every step.
GROUP_HIDDEN_MAX = 1 << 22


def can_train_together(trainers: Sequence[SPDTrainer]) -> bool:
    """True when the runs differ only in seed (and a per-seed beta_3), the stacked CI MLPs are small enough to gain
    from it (:data:`GROUP_HIDDEN_MAX`) and a run's batch is whole blocks of rows (:mod:`methods._seed_groups`)."""
    if len(trainers) < 2:
        return False
    first = trainers[0]
    same = all(
        t.net is first.net
        and t.sites == first.sites
        and t.device == first.device
        and {**t.cfg.__dict__, "imp_coeff": 0} == {**first.cfg.__dict__, "imp_coeff": 0}
        for t in trainers
    )
    cfg = first.cfg
    hidden = len(trainers) * cfg.batch_size * len(first.sites) * cfg.C * cfg.d_gate
    return same and hidden <= GROUP_HIDDEN_MAX and rows_aligned(cfg.batch_size)


class _Stacked:
    """The runs' CI MLP parameters stacked along a leading instance dimension (differentiable: gradients
    reach each run's own leaves). The subcomponent products stay one matrix product per run: CPU ``bmm``
    sums in another order than ``mm`` (a plain loop for small matrices), which would change the bits."""

    def __init__(self, trainers: Sequence[SPDTrainer]):
        self.models = [t.spd for t in trainers]
        self.w_in, self.b_in, self.w_out, self.b_out = (
            torch.stack([getattr(m, k) for m in self.models]).unsqueeze(1) for k in ("w_in", "b_in", "w_out", "b_out")
        )

    def inner(self, k: int, a: Tensor) -> Tensor:
        """``[N, rows, C]`` from the site input ``a [N * rows, d]`` (rows run-major)."""
        a = a.reshape(len(self.models), -1, a.shape[-1])
        return torch.stack([m.inner(k, a_n) for m, a_n in zip(self.models, a, strict=True)])

    def write(self, k: int, inner: Tensor) -> Tensor:
        return torch.cat([m.write(k, i_n) for m, i_n in zip(self.models, inner, strict=True)])

    def ci_raw(self, inner: Tensor) -> Tensor:
        h = torch.nn.functional.gelu(torch.addcmul(self.b_in, inner.unsqueeze(-1), self.w_in))
        return (h * self.w_out).sum(-1) + self.b_out

    def faith(self, params: Sequence[Tensor], n_weights: int) -> Tensor:
        return (
            torch.stack(
                [sum(((W - Wh) ** 2).sum() for W, Wh in zip(params, m.weights(), strict=True)) for m in self.models]
            )
            / n_weights
        )


def _per_run_mse(out: Tensor, target: Tensor, n: int) -> Tensor:
    return ((out - target) ** 2).reshape(n, -1).mean(1)


def group_losses(trainers: Sequence[SPDTrainer], xs: Sequence[Tensor]) -> dict[str, Tensor]:
    """:meth:`SPDTrainer.losses` of every run at once: each term a tensor ``[N]``."""
    first, n = trainers[0], len(trainers)
    cfg = first.cfg
    p = _Stacked(trainers)
    x = torch.cat(list(xs))
    with torch.no_grad():
        target, _, inputs = run_sites(first.net, first.params, x)
    inner = torch.stack([p.inner(k, a) for k, a in enumerate(inputs)], dim=2)  # [N, rows, S, C]
    raw = p.ci_raw(inner)
    g, g_up = lower_leaky_hard_sigmoid(raw), upper_leaky_hard_sigmoid(raw)
    S = g.shape[2]
    # each run draws its masks from its own generator in the order it does alone: all sites (the stochastic
    # term), then one per site (the layerwise term), each only where its term is on
    n_draws = S * (bool(cfg.stoch_coeff) + bool(cfg.layerwise_coeff))
    draws = [
        [torch.rand(g[j, :, i % S].shape, generator=t.g_mask, device=t.device, dtype=g.dtype) for i in range(n_draws)]
        for j, t in enumerate(trainers)
    ]
    first_layerwise = S if cfg.stoch_coeff else 0

    def mask(k: int, which: int) -> Tensor:
        r = torch.stack([d[which] for d in draws])
        return g[:, :, k] + (1 - g[:, :, k]) * r

    def masked(masks: dict[int, Tensor]) -> Tensor:
        def replace(k: int, a: Tensor) -> Tensor | None:
            m = masks.get(k)
            return None if m is None else p.write(k, p.inner(k, a) * m)

        out, _, _ = run_sites(first.net, first.params, x, replace)
        return _per_run_mse(out, target, n)

    faith = p.faith(list(first.params.values()), first.n_weights)
    out = {"faith": faith, "imp": (g_up**cfg.pnorm).sum((2, 3)).mean(1)}
    stoch = masked({k: mask(k, k) for k in range(S)}) if cfg.stoch_coeff else None
    if stoch is not None:
        out["stoch"] = stoch
    if cfg.layerwise_coeff:
        out["layerwise"] = sum(masked({k: mask(k, first_layerwise + k)}) for k in range(S)) / S
    imp_coeff = torch.tensor([t.cfg.imp_coeff for t in trainers], dtype=faith.dtype, device=faith.device)
    out["total"] = (
        cfg.faith_coeff * faith
        + imp_coeff * out["imp"]
        + cfg.stoch_coeff * out.get("stoch", 0.0)
        + cfg.layerwise_coeff * out.get("layerwise", 0.0)
    )
    return out


def train_together(
    trainers: Sequence[SPDTrainer], log_every: int = 0, out_of_time: Callable[[], bool] | None = None
) -> list[TrainLog | FloatingPointError]:
    """:meth:`SPDTrainer.train` for every run at once. A run whose loss becomes non-finite leaves the group
    with its error (the others go on unchanged); all stop together where ``out_of_time()`` says so."""
    if not can_train_together(trainers):
        raise ValueError(
            f"spd: these runs cannot train together (different settings, too large a group, or a batch not in "
            f"whole blocks of {ROWS_ALIGN} rows)"
        )
    opts = [AdamW(t.spd.parameters(), lr=trainers[0].cfg.lr) for t in trainers]
    return train_group(
        opts, trainers[0].cfg, lambda live, step: group_losses(live, [t.sample(t.cfg.batch_size) for t in live]),
        trainers, "spd", log_every, out_of_time,
    )  # fmt: skip


class GroupHooks:
    """What a method adds to :func:`train_group`'s step (nothing here): after the backward pass, before a run's
    optimiser step, and when runs leave the group."""

    def after_backward(self, step: int) -> None:
        pass

    def before_update(self, j: int) -> None:
        pass

    def keep(self, idx: list[int]) -> None:
        pass


def train_group(
    opts: Sequence[AdamW],
    cfg: Any,
    losses: Callable[[list[Any], int], dict[str, Tensor]],
    trainers: Sequence[Any],
    who: str,
    log_every: int = 0,
    out_of_time: Callable[[], bool] | None = None,
    hooks: GroupHooks | None = None,
) -> list[TrainLog | FloatingPointError]:
    """The training loop of a group of runs (SPD's, VPD's): each step sets every live run's learning rate
    (``cfg.lr_at``), takes ``losses(live trainers, step)`` (each term ``[live runs]``), drops the runs whose
    total is not finite with the error they raise alone, runs one backward pass and each run's optimiser step,
    and logs every ``log_every`` steps as a run alone does."""
    hooks = hooks or GroupHooks()
    logs: list[TrainLog | FloatingPointError] = [TrainLog() for _ in trainers]
    live = list(range(len(trainers)))
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        for j in live:
            opts[j].lr = cfg.lr_at(step)
            opts[j].zero_grad()
        terms = losses([trainers[j] for j in live], step)
        total = terms["total"].detach()
        finite = torch.isfinite(total)
        for i, j in enumerate(live):
            if not finite[i]:
                logs[j] = FloatingPointError(f"{who}: loss became {float(total[i])} at step {step}")
        terms["total"][finite].sum().backward()
        hooks.after_backward(step)
        for i, j in enumerate(live):
            log = logs[j]
            if not isinstance(log, TrainLog):
                continue
            hooks.before_update(j)
            opts[j].step()
            log.steps = step + 1
            if log_every and (step % log_every == 0 or step == cfg.steps - 1):
                log.history.append({"step": step, **{k: float(v[i].detach()) for k, v in terms.items()}})
        going = [i for i, j in enumerate(live) if isinstance(logs[j], TrainLog)]
        live = [live[i] for i in going]
        if not live:
            break
        hooks.keep(going)
        if out_of_time is not None and step < cfg.steps - 1 and out_of_time():
            for j in live:
                logs[j].stopped_early = True  # type: ignore[union-attr]
            break
    seconds = time.perf_counter() - t0
    for log in logs:
        if isinstance(log, TrainLog):
            log.seconds = seconds
    return logs
