"""VPD and SPD main (:mod:`methods._vpd_core`): several seeds' runs trained as one model (issue: speed).

The runs' batches are laid end to end and the target network runs once on all rows. The causal importances,
the masks, the persistent adversary (its sources and their Adam moments) and every loss term carry a leading run
dimension, so the element-wise work (the masks and the clamps) and the backward pass run once for the group.
What sums in an order that depends on a tensor's shape stays one per run, as alone: every site's matrix products
(CPU ``bmm`` sums in another order than ``mm``), the CI functions, the minimality sums and each run's mean
squared error. So do the element-wise steps that are not correctly rounded (the minimality power, the
adversary's fused Adam update): a CPU kernel treats a tensor's last partial block of vectors apart from the
rest. Each run draws from its own generators in the order it does alone, so each gives the same decomposition,
bit for bit, as alone, whatever the batch (``tests/test_seed_groups.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from methods._adamw import AdamW
from methods._seed_groups import ROWS_ALIGN, rows_aligned
from methods._spd_core import TrainLog, upper_leaky_hard_sigmoid
from methods._spd_group import GROUP_HIDDEN_MAX, GroupHooks, train_group
from methods._spd_sites import run_sites
from methods._vpd_core import EPS, VPDTrainer, adversary_ascent, lower_leaky

_PER_SEED = ("imp_coeff", "freq_coeff")  # the blind rule scales these by each seed's sampled output


def can_train_together(trainers: Sequence[VPDTrainer]) -> bool:
    """True when the runs differ only in seed (and the blind rule's per-seed minimality coefficients), the stacked
    CI functions' hidden layer is small enough to gain from it (:data:`GROUP_HIDDEN_MAX`, as SPD) and a run's batch
    is whole blocks of rows (:mod:`methods._seed_groups`)."""
    if len(trainers) < 2:
        return False
    first = trainers[0]

    def settings(t: VPDTrainer) -> dict:
        return {k: v for k, v in t.cfg.__dict__.items() if k not in _PER_SEED}

    same = all(
        t.net is first.net and t.sites == first.sites and t.device == first.device and settings(t) == settings(first)
        for t in trainers
    )
    cfg = first.cfg
    per_row = cfg.C * cfg.ci_hidden if cfg.ci == "scalar" else cfg.ci_hidden
    small = len(trainers) * cfg.batch_size * len(first.sites) * per_row <= GROUP_HIDDEN_MAX
    return same and small and rows_aligned(cfg.batch_size)


class _Group(GroupHooks):
    """The live runs and their stacked adversary state ``[runs, rows, S, C + 1]``; as :func:`train_group`'s
    hooks, the third ascent after the backward pass and each run's gradient clipping."""

    def __init__(self, trainers: Sequence[VPDTrainer], params: list[list[Tensor]]):
        self.runs = list(trainers)
        self.params = params  # every run's trained tensors (gradient clipping)
        self.cfg = self.runs[0].cfg
        self.sources: Tensor | None = None
        self.adam_m: Tensor | None = None
        self.adam_v: Tensor | None = None
        self.adv_t = 0
        self.src: Tensor | None = None  # this step's sources in the main loss

    def after_backward(self, step: int) -> None:
        """The third ascent: the main backward's source gradient, before the parameters move."""
        if self.cfg.adv_coeff:
            assert self.src is not None and self.src.grad is not None
            self.ascend(self.src.grad / self.cfg.adv_coeff, step)

    def before_update(self, j: int) -> None:
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params[j], self.cfg.grad_clip)

    def keep(self, idx: list[int]) -> None:
        """Only the runs at ``idx`` go on."""
        if len(idx) == len(self.runs):
            return
        self.runs = [self.runs[i] for i in idx]
        if self.sources is not None:
            self.sources, self.adam_m, self.adam_v = (t[idx] for t in (self.sources, self.adam_m, self.adam_v))  # type: ignore[index]

    def ascend(self, grad: Tensor, step: int) -> None:
        """The adversary's Adam step, on each run's own slice (see :meth:`losses` on why not stacked)."""
        assert self.sources is not None and self.adam_m is not None and self.adam_v is not None
        self.adv_t += 1
        for j in range(len(self.runs)):
            adversary_ascent(self.sources[j], self.adam_m[j], self.adam_v[j], grad[j], self.adv_t, step, self.cfg)

    def rand(self, rows: int, S: int, C: int, dtype: torch.dtype) -> Tensor:
        """Each run's ``U(0, 1)`` draw ``[rows, S, C + 1]`` from its own mask generator, stacked."""
        return torch.stack(
            [torch.rand(rows, S, C + 1, generator=t.g_mask, device=t.device, dtype=dtype) for t in self.runs]
        )

    def route(self, rows: int, S: int) -> Tensor | None:
        routes = [t.route(rows, S) for t in self.runs]
        return None if routes[0] is None else torch.stack(routes)  # type: ignore[arg-type]

    def mse(self, out: Tensor, target: Tensor, rows: int) -> Tensor:
        return torch.stack([F.mse_loss(o, y) for o, y in zip(out.split(rows), target.split(rows), strict=True)])

    def masked_forward(
        self,
        x: Tensor,
        masks: Tensor,
        delta_masks: Tensor | None,
        route: Tensor | None,
        resid: list[list[Tensor]] | None,
    ) -> Tensor:
        """:meth:`VPDTrainer.masked_forward` of every run on its own rows of ``x``: ``masks [runs, rows, S, C]``,
        ``delta_masks`` and ``route`` ``[runs, rows, S]``."""
        rows = x.shape[0] // len(self.runs)

        def replace(k: int, a: Tensor) -> Tensor | None:
            if route is not None and not bool(route[:, :, k].any()):
                return None
            pieces = []
            for j, (t, a_j) in enumerate(zip(self.runs, a.split(rows), strict=True)):
                r_j = None if route is None else route[j, :, k : k + 1]
                if r_j is not None and not bool(r_j.any()):
                    pieces.append(t.keep_weight(k, a_j))
                    continue
                d_j = None if delta_masks is None else delta_masks[j, :, k : k + 1]
                pieces.append(t.site_output(k, a_j, masks[j, :, k], d_j, r_j, None if resid is None else resid[j]))
            return torch.cat(pieces)

        out, _, _ = run_sites(self.runs[0].net, self.runs[0].params, x, replace)
        return out

    def losses(self, xs: Sequence[Tensor], step: int) -> dict[str, Tensor]:
        """:meth:`VPDTrainer.losses` of every run at once: each term a tensor ``[runs]``."""
        cfg, runs = self.cfg, self.runs
        rows = xs[0].shape[0]
        x = torch.cat(list(xs))
        target, inputs = runs[0].target_pass(x)
        per_run = [a.split(rows) for a in inputs]
        raw = torch.stack([t.raw([a[j] for a in per_run]) for j, t in enumerate(runs)])  # [runs, rows, S, C]
        g, g_up = lower_leaky(raw), upper_leaky_hard_sigmoid(raw)
        S, C = g.shape[2], g.shape[3]
        resid = [t.spd.residuals(t.W) for t in runs] if cfg.delta else None
        out: dict[str, Tensor] = {}
        faith = torch.stack([t.faithfulness(t.spd.residuals(t.W)) for t in runs])
        out["faith"] = faith
        if cfg.adv_coeff:
            if self.sources is None:
                self.sources = self.rand(rows, S, C, g.dtype)
                self.adam_m, self.adam_v = torch.zeros_like(self.sources), torch.zeros_like(self.sources)
            route = self.route(rows, S)
            g_det = g.detach()
            resid_det = None if resid is None else [[R.detach() for R in rs] for rs in resid]
            for _ in range(cfg.adv_ascents):
                src = self.sources.clone().requires_grad_(True)
                masked = self.masked_forward(x, g_det + (1 - g_det) * src[..., :C], src[..., C], route, resid_det)
                (grad,) = torch.autograd.grad(self.mse(masked, target, rows).sum(), src)
                self.ascend(grad, step)
            src = self.sources.clone().requires_grad_(True)
            masked = self.masked_forward(x, g + (1 - g) * src[..., :C], src[..., C], route, resid)
            out["adv"] = self.mse(masked, target, rows)
            self.src = src
        if cfg.stoch_coeff:
            r = self.rand(rows, S, C, g.dtype)
            route = self.route(rows, S)
            masked = self.masked_forward(x, g + (1 - g) * r[..., :C], r[..., C], route, resid)
            out["stoch"] = self.mse(masked, target, rows)
        if cfg.layerwise_coeff:
            terms = []
            for k in range(S):
                r = self.rand(rows, S, C, g.dtype)
                only = torch.zeros(len(runs), rows, S, dtype=torch.bool, device=x.device)
                only[:, :, k] = True
                masked = self.masked_forward(x, g + (1 - g) * r[..., :C], r[..., C], only, resid)
                terms.append(self.mse(masked, target, rows))
            out["layerwise"] = sum(terms) / S
        # the power (not correctly rounded) and the adversary's fused Adam updates run on each run's own
        # contiguous slice: a CPU kernel treats a tensor's last partial block of vectors apart, so on a stacked
        # tensor a run's elements can fall on another side of that border than alone (a batch of 2: other bits)
        s = [((g_up[j] + EPS) ** cfg.p_at(step)).sum(0) for j in range(len(runs))]  # each [S, C]
        out["imp"] = torch.stack([s_j.sum() for s_j in s]) / rows
        out["freq"] = torch.stack([(s_j * torch.log2(1 + s_j)).sum() for s_j in s]) / rows
        imp_coeff, freq_coeff = (
            torch.tensor([getattr(t.cfg, k) for t in runs], dtype=faith.dtype, device=faith.device) for k in _PER_SEED
        )
        out["total"] = (
            cfg.faith_coeff * faith
            + imp_coeff * out["imp"]
            + freq_coeff * out["freq"]
            + cfg.adv_coeff * out.get("adv", 0.0)
            + cfg.stoch_coeff * out.get("stoch", 0.0)
            + cfg.layerwise_coeff * out.get("layerwise", 0.0)
        )
        return out


def train_together(
    trainers: Sequence[VPDTrainer], log_every: int = 0, out_of_time: Callable[[], bool] | None = None
) -> list[TrainLog | FloatingPointError]:
    """:meth:`VPDTrainer.train` for every run at once. A run whose loss becomes non-finite leaves the group with
    the error it raises alone (the others go on unchanged); all stop together where ``out_of_time()`` says so."""
    if not can_train_together(trainers):
        raise ValueError(
            f"vpd: these runs cannot train together (different settings, too large a group, or a batch not in "
            f"whole blocks of {ROWS_ALIGN} rows)"
        )
    cfg = trainers[0].cfg
    t0 = time.perf_counter()
    for t in trainers:
        t.faithfulness_warmup()
    params = [[p for p in t.spd.parameters() if p.numel()] for t in trainers]
    opts = [AdamW(ps, lr=cfg.lr) for ps in params]
    group = _Group(trainers, params)
    losses = lambda live, step: group.losses([t.sample(cfg.batch_size) for t in live], step)  # noqa: E731
    logs = train_group(opts, cfg, losses, trainers, "vpd", log_every, out_of_time, group)
    seconds = time.perf_counter() - t0  # the warm-ups included, as alone
    for log in logs:
        if isinstance(log, TrainLog):
            log.seconds = seconds
    return logs
