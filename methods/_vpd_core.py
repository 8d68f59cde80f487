"""Adversarial parameter decomposition (VPD) and SPD's main-branch objective, the training core.

VPD: Bushnaq et al. (Goodfire, May 2026), *Interpreting Language Model Parameters*. SPD main: goodfire-ai/spd
``main`` after the SPD paper (Bushnaq, Braun, Sharkey 2025, arXiv:2506.20790). Both keep SPD's
parametrisation (:class:`methods._spd_core.SPDModel`: rank-1 subcomponents ``U[:, c] V[c, :]`` per matrix,
one *site* per use of a matrix, :mod:`methods._spd_sites`) and add, each switched by :class:`VPDConfig`:

- **the residual channel**: ``Delta = W - U V``, recomputed from the live factors, is one more maskable
  channel per site; its mask is the raw source (its causal importance is 0 by definition);
- **causal importances** from one MLP per site, from the site's input to its C logits (VPD's toy
  configurations), or SPD's per-subcomponent scalar MLPs; the masks use the lower-leaky clamp whose
  backward leaks (slope 0.01) below 0 only where the gradient would raise the logit (VPD: a forward leak
  gave negative masks and instability);
- **reconstruction under masks** ``m = g + (1 - g) r``: a stochastic term with fresh ``r ~ U(0, 1)`` and a
  term whose sources ``r`` are *persistent adversaries*, kept across batches with their own Adam moments
  and pushed up the loss they maximise (two ascent steps before the main loss and one from the main
  backward); both route each input through a random subset of the sites (k ~ U{1..S}), as the paper's text
  says;
- **minimality**: ``s_c = sum_b (g_up + eps)^p`` per subcomponent, ``p`` annealed linearly (VPD 2.0 -> 0.4),
  ``L_imp = sum_c s_c / B`` and the frequency term ``L_freq = sum_c s_c log2(1 + s_c) / B``;
- **faithfulness**: a penalty on ``||Delta||^2 / N`` and a warm-up of the factors on that penalty alone
  (SPD main PR #169).

Reconstruction is the mean squared error of the network's output, as in VPD's and SPD's toy models.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods._adamw import AdamW
from methods._spd_core import LEAK, SPDModel, TrainLog, upper_leaky_hard_sigmoid
from methods._spd_sites import decomposed_sites, run_sites

EPS = 1e-12  # added to g_up before the power p < 1 (VPD; its gradient is unbounded at 0)
ADAM_EPS = 1e-8  # the adversary's Adam, added after the square root
CI_KINDS = ("vector", "scalar")
ROUTINGS = ("subset", "all")


class _LowerLeaky(torch.autograd.Function):
    """clamp(z, 0, 1) forward; backward passes the gradient on (0, 1], LEAK x it below 0 where it is
    negative (descent would raise z), and nothing above 1 (VPD, "lower-leaky" squashing)."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(z)
        return z.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        (z,) = ctx.saved_tensors
        inside = (z > 0) & (z <= 1)
        leak = (z <= 0) & (grad < 0)
        return torch.where(inside, grad, torch.where(leak, LEAK * grad, torch.zeros_like(grad)))


def lower_leaky(z: Tensor) -> Tensor:
    return _LowerLeaky.apply(z)


@dataclass
class VPDConfig:
    C: int = 20
    ci: str = "vector"  # vector: an MLP per site on its input; scalar: SPD's MLP per subcomponent
    ci_hidden: int = 50
    imp_coeff: float = 8e-4
    freq_coeff: float = 4e-4
    p_start: float = 2.0
    p_end: float = 0.4
    adv_coeff: float = 0.5
    stoch_coeff: float = 0.5
    layerwise_coeff: float = 0.0  # SPD's one-site-at-a-time stochastic reconstruction
    routing: str = "subset"  # subset: each input through a random k-subset of the sites; all: every site
    delta: bool = True  # the residual as a maskable channel
    faith_coeff: float = 1.0  # penalty on ||W - U V||^2 / N
    warmup_steps: int = 200  # factor-only steps on the faithfulness penalty before training
    warmup_lr: float = 1e-2
    warmup_wd: float = 0.0
    adv_lr: float = 1e-2
    adv_ascents: int = 2  # ascent steps before the main loss (one more follows from the main backward)
    adv_beta1: float = 0.5
    adv_beta2: float = 0.99
    adv_warmup: float = 0.025  # fraction of steps over which the adversary's lr rises linearly
    lr: float = 1e-3
    final_lr_frac: float = 0.1  # half-cosine decay from lr to this fraction of it
    grad_clip: float = 1.0  # gradient norm clip of the factors and CI function (0: none)
    steps: int = 20_000
    batch_size: int = 4096

    def __post_init__(self) -> None:
        if self.ci not in CI_KINDS:
            raise ValueError(f"vpd: ci must be one of {CI_KINDS}, not {self.ci!r}")
        if self.routing not in ROUTINGS:
            raise ValueError(f"vpd: routing must be one of {ROUTINGS}, not {self.routing!r}")
        for k in ("C", "ci_hidden", "steps", "batch_size"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"vpd: {k} must be a positive integer, not {getattr(self, k)!r}")
        for k in ("warmup_steps", "adv_ascents"):
            if int(getattr(self, k)) < 0:
                raise ValueError(f"vpd: {k} must be a non-negative integer, not {getattr(self, k)!r}")
        for k in (
            "imp_coeff", "freq_coeff", "p_start", "p_end", "adv_coeff", "stoch_coeff", "layerwise_coeff",
            "faith_coeff", "warmup_lr", "warmup_wd", "adv_lr", "adv_warmup", "lr", "final_lr_frac", "grad_clip",
        ):  # fmt: skip
            v = float(getattr(self, k))
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"vpd: {k} must be a finite non-negative number, not {getattr(self, k)!r}")
        if not 0 <= self.adv_beta1 < 1 or not 0 <= self.adv_beta2 < 1:
            raise ValueError("vpd: adv_beta1 and adv_beta2 must lie in [0, 1)")
        if self.adv_coeff + self.stoch_coeff + self.layerwise_coeff == 0:
            raise ValueError("vpd: at least one reconstruction term needs a positive coefficient")

    def lr_at(self, step: int) -> float:
        f = self.final_lr_frac
        return self.lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * step / max(self.steps - 1, 1))))

    def p_at(self, step: int) -> float:
        """VPD: p(t) = p_start + (p_end - p_start) t / t_max."""
        return self.p_start + (self.p_end - self.p_start) * step / max(self.steps - 1, 1)


def adversary_ascent(sources: Tensor, m: Tensor, v: Tensor, grad: Tensor, t: int, step: int, cfg: VPDConfig) -> None:
    """One Adam ascent step (the ``t``-th) of the persistent sources on ``grad``, in place, then a clamp to
    [0, 1]; the learning rate rises linearly over the first ``adv_warmup`` of the steps."""
    b1, b2 = cfg.adv_beta1, cfg.adv_beta2
    m.mul_(b1).add_(grad, alpha=1 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    warm = max(1, int(cfg.adv_warmup * cfg.steps))
    lr = cfg.adv_lr * min(1.0, (step + 1) / warm)
    sources.add_(lr * m_hat / (v_hat.sqrt() + ADAM_EPS)).clamp_(0.0, 1.0)


class VPDModel(SPDModel):
    """SPD's factors and, for ``ci="scalar"``, its CI MLPs; for ``ci="vector"``, one ``d_in -> hidden (GELU) ->
    C`` MLP per site (VPD's ``layerwise_mlp``)."""

    def __init__(self, weights: dict[str, Tensor], sites: list, cfg: VPDConfig, generator: torch.Generator):
        super().__init__(weights, sites, cfg.C, cfg.ci_hidden if cfg.ci == "scalar" else 0, generator)
        self.ci_kind = cfg.ci
        if cfg.ci == "vector":
            dt, h = next(iter(weights.values())).dtype, cfg.ci_hidden
            self.w1 = nn.ParameterList(
                [nn.Parameter((torch.randn(s.d_in, h, generator=generator) / math.sqrt(s.d_in)).to(dt)) for s in sites]
            )
            self.b1 = nn.ParameterList([nn.Parameter(torch.zeros(h, dtype=dt)) for _ in sites])
            self.w2 = nn.ParameterList(
                [nn.Parameter((torch.randn(h, cfg.C, generator=generator) / math.sqrt(h)).to(dt)) for _ in sites]
            )
            self.b2 = nn.ParameterList([nn.Parameter(torch.zeros(cfg.C, dtype=dt)) for _ in sites])

    def logits(self, inputs: list[Tensor], inner: Tensor) -> Tensor:
        """CI logits ``[rows, S, C]`` from the site inputs (vector) or inner activations (scalar)."""
        if self.ci_kind == "scalar":
            return self.ci_raw(inner)
        return torch.stack(
            [F.gelu(a @ self.w1[k] + self.b1[k]) @ self.w2[k] + self.b2[k] for k, a in enumerate(inputs)], dim=1
        )

    def residuals(self, weights: list[Tensor]) -> list[Tensor]:
        return [W - U @ V for W, U, V in zip(weights, self.U, self.V, strict=True)]


class VPDTrainer:
    """Runs VPD (or SPD main) on one network; ``sample(n, generator)`` draws CPU inputs."""

    def __init__(
        self,
        model: nn.Module,
        params: dict[str, Tensor],
        sample: Callable[[int, torch.Generator], Tensor],
        cfg: VPDConfig,
        seed: int,
        device: str = "cpu",
    ):
        self.net, self.params, self.sample_fn, self.cfg, self.device = model, params, sample, cfg, device
        self.g_data = torch.Generator().manual_seed(seed)
        self.g_mask = torch.Generator(device=device).manual_seed(seed + 1)
        self.sites = decomposed_sites(model, params, self.sample(8), "vpd")
        self.spd = VPDModel(params, self.sites, cfg, torch.Generator().manual_seed(seed)).to(device)
        self.W = [p.detach() for p in params.values()]
        self.n_weights = sum(p.numel() for p in params.values())
        self.sources: Tensor | None = None  # the persistent adversary, [rows, S, C + 1]
        self.adam_m: Tensor | None = None
        self.adam_v: Tensor | None = None
        self.adv_t = 0
        self._src: Tensor | None = None  # this step's sources in the main loss (their gradient is the third ascent)

    def sample(self, n: int) -> Tensor:
        return self.sample_fn(n, self.g_data).to(self.device)

    def target_pass(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        with torch.no_grad():
            out, _, inputs = run_sites(self.net, self.params, x)
        return out, inputs

    def raw(self, inputs: list[Tensor]) -> Tensor:
        inner = torch.stack([self.spd.inner(k, a) for k, a in enumerate(inputs)], dim=1)
        return self.spd.logits(inputs, inner)

    def ci_values(self, x: Tensor) -> Tensor:
        """Causal importances in [0, 1], ``[rows, S, C]`` (the exported attributions)."""
        _, inputs = self.target_pass(x)
        return self.raw(inputs).clamp(0, 1)

    def _apply(self, k: int, a: Tensor, M: Tensor) -> Tensor:
        return a @ M if self.sites[k].transposed else a @ M.T

    def site_output(
        self,
        k: int,
        a: Tensor,
        mask: Tensor,
        delta_mask: Tensor | None,
        route: Tensor | None,
        resid: list[Tensor] | None,
    ) -> Tensor:
        """Site ``k``'s output ``((a V^T) * mask) U^T + delta_mask (a Delta^T)`` on the rows where ``route
        [rows, 1]`` is True (all where None), ``a W^T`` on the others."""
        out = self.spd.write(k, self.spd.inner(k, a) * mask)
        if resid is not None and delta_mask is not None:
            out = out + delta_mask * self._apply(k, a, resid[self.spd.site_param[k]])
        if route is not None and not bool(route.all()):
            out = torch.where(route, out, self.keep_weight(k, a))
        return out

    def keep_weight(self, k: int, a: Tensor) -> Tensor:
        return self._apply(k, a, self.W[self.spd.site_param[k]])

    def masked_forward(
        self, x: Tensor, masks: Tensor, delta_masks: Tensor | None, route: Tensor | None, resid: list[Tensor] | None
    ) -> Tensor:
        """The network with each site's output :meth:`site_output` on the rows that ``route [rows, S]`` sends
        through it (all rows where None); other rows and sites keep W."""

        def replace(k: int, a: Tensor) -> Tensor | None:
            if route is not None and not bool(route[:, k].any()):
                return None
            deltas = None if delta_masks is None else delta_masks[:, k : k + 1]
            return self.site_output(k, a, masks[:, k], deltas, None if route is None else route[:, k : k + 1], resid)

        out, _, _ = run_sites(self.net, self.params, x, replace)
        return out

    def route(self, rows: int, S: int) -> Tensor | None:
        """Uniform-k-subset routing: per row, k ~ U{1..S} and a random k-subset of the sites (None: all)."""
        if self.cfg.routing == "all" or S == 1:
            return None
        k = torch.randint(1, S + 1, (rows, 1), generator=self.g_mask, device=self.device)
        rank = torch.rand(rows, S, generator=self.g_mask, device=self.device).argsort(dim=1).argsort(dim=1)
        return rank < k

    def _ascend(self, grad: Tensor, step: int) -> None:
        assert self.sources is not None and self.adam_m is not None and self.adam_v is not None
        self.adv_t += 1
        adversary_ascent(self.sources, self.adam_m, self.adam_v, grad, self.adv_t, step, self.cfg)

    def losses(self, x: Tensor, step: int) -> dict[str, Tensor]:
        cfg = self.cfg
        target, inputs = self.target_pass(x)
        raw = self.raw(inputs)
        g, g_up = lower_leaky(raw), upper_leaky_hard_sigmoid(raw)
        rows, S, C = g.shape
        # the penalty's residuals are computed apart from the masked channel's: sharing them reorders the
        # backward's sums and changes the trained decompositions in the last bits (the committed cells' numbers)
        resid = self.spd.residuals(self.W) if cfg.delta else None
        out: dict[str, Tensor] = {}
        faith = self.faithfulness(self.spd.residuals(self.W))
        out["faith"] = faith
        if cfg.adv_coeff:
            if self.sources is None:
                self.sources = torch.rand(rows, S, C + 1, generator=self.g_mask, device=self.device, dtype=g.dtype)
                self.adam_m, self.adam_v = torch.zeros_like(self.sources), torch.zeros_like(self.sources)
            route = self.route(rows, S)
            g_det = g.detach()
            resid_det = None if resid is None else [R.detach() for R in resid]
            for _ in range(cfg.adv_ascents):
                src = self.sources.clone().requires_grad_(True)
                masked = self.masked_forward(x, g_det + (1 - g_det) * src[..., :C], src[..., C], route, resid_det)
                (grad,) = torch.autograd.grad(F.mse_loss(masked, target), src)
                self._ascend(grad, step)
            src = self.sources.clone().requires_grad_(True)
            out["adv"] = F.mse_loss(
                self.masked_forward(x, g + (1 - g) * src[..., :C], src[..., C], route, resid), target
            )
            self._src = src
        if cfg.stoch_coeff:
            r = torch.rand(rows, S, C + 1, generator=self.g_mask, device=self.device, dtype=g.dtype)
            route = self.route(rows, S)
            out["stoch"] = F.mse_loss(self.masked_forward(x, g + (1 - g) * r[..., :C], r[..., C], route, resid), target)
        if cfg.layerwise_coeff:
            terms = []
            for k in range(S):
                r = torch.rand(rows, S, C + 1, generator=self.g_mask, device=self.device, dtype=g.dtype)
                only = torch.zeros(rows, S, dtype=torch.bool, device=self.device)
                only[:, k] = True
                terms.append(
                    F.mse_loss(self.masked_forward(x, g + (1 - g) * r[..., :C], r[..., C], only, resid), target)
                )
            out["layerwise"] = sum(terms) / S
        s = ((g_up + EPS) ** cfg.p_at(step)).sum(0)  # [S, C]
        out["imp"] = s.sum() / rows
        out["freq"] = (s * torch.log2(1 + s)).sum() / rows
        out["total"] = (
            cfg.faith_coeff * faith
            + cfg.imp_coeff * out["imp"]
            + cfg.freq_coeff * out["freq"]
            + cfg.adv_coeff * out.get("adv", 0.0)
            + cfg.stoch_coeff * out.get("stoch", 0.0)
            + cfg.layerwise_coeff * out.get("layerwise", 0.0)
        )
        return out

    def faithfulness(self, residuals: list[Tensor]) -> Tensor:
        """``sum ||W - U V||^2 / N`` over the decomposed matrices."""
        return sum((R**2).sum() for R in residuals) / self.n_weights

    def faithfulness_warmup(self) -> None:
        """Factor-only AdamW steps on ``||W - U V||^2 / N`` (SPD main PR #169); the optimiser is discarded."""
        cfg = self.cfg
        if not cfg.warmup_steps:
            return
        factors = [*self.spd.U, *self.spd.V]
        opt = AdamW(factors, lr=cfg.warmup_lr, weight_decay=cfg.warmup_wd)
        for _ in range(cfg.warmup_steps):
            loss = self.faithfulness(self.spd.residuals(self.W))
            opt.zero_grad()
            loss.backward()
            opt.step()

    def train(self, log_every: int = 0, out_of_time: Callable[[], bool] | None = None) -> TrainLog:
        """Warm up, then run ``cfg.steps`` steps, or fewer where ``out_of_time()`` (checked after each) says to stop."""
        cfg = self.cfg
        log = TrainLog()
        t0 = time.perf_counter()
        self.faithfulness_warmup()
        params = [p for p in self.spd.parameters() if p.numel()]
        opt = AdamW(params, lr=cfg.lr)
        for step in range(cfg.steps):
            opt.lr = cfg.lr_at(step)
            terms = self.losses(self.sample(cfg.batch_size), step)
            if not torch.isfinite(terms["total"]):
                raise FloatingPointError(f"vpd: loss became {float(terms['total'].detach())} at step {step}")
            opt.zero_grad()
            terms["total"].backward()
            if cfg.adv_coeff:  # the third ascent: the main backward's source gradient, pre-update parameters
                assert self._src is not None and self._src.grad is not None
                self._ascend(self._src.grad / cfg.adv_coeff, step)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            log.steps = step + 1
            if log_every and (step % log_every == 0 or step == cfg.steps - 1):
                log.history.append({"step": step, **{k: float(v.detach()) for k, v in terms.items()}})
            if out_of_time is not None and step < cfg.steps - 1 and out_of_time():
                log.stopped_early = True
                break
        log.seconds = time.perf_counter() - t0
        return log
