"""L3D's training loop (arXiv:2504.00194 Algorithm 1 and App. B.3; docs/reference/l3d.md 1.5-1.8).

Per batch of B samples: each sample x_i gets a random reference x_r from the same batch (with replacement,
as in the code); g_i = grad_W D(f(x_i), f(x_r)) at W_0; c = V^in g; BatchTopK keeps the largest |c| over the
whole batch (a fraction k of the B * n_v entries); g_hat = V^out c_topk; the loss is the batch-pooled
fraction of unexplained gradient energy sum_b ||g_b - g_hat_b||^2 / sum_b ||g_b||^2; Adam step; V^out is
renormalised to unit norm. Epochs 0..warm_start_epochs use k = 0.999 (code only; epoch 0 is always dense).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from methods._adamw import AdamW
from methods._l3d_grads import flatten_grads, jacobians, outputs, per_sample_grads
from methods._l3d_tucker import TuckerBank

WARM_K = 0.999


@dataclass
class L3DConfig:
    n_v: int = 10
    rank: int | dict[str, tuple[int, ...]] = 1  # int: that rank for every mode of every tensor
    k: float = 0.1
    epochs: int = 1000
    batch_size: int = 32
    n_samples: int = 1000
    lr: float = 0.01
    lr_step_epochs: int = 100
    lr_gamma: float = 0.8
    warm_start_epochs: int = 0
    norm: str = "l2"
    reference: str = "random"  # "random": a random sample of the batch (paper, code); "mean": the data's mean output
    jacobian_limit: float = 5e7  # cache per-sample Jacobians when N * n_o * n_w is at most this

    def __post_init__(self) -> None:
        if self.n_v < 1:
            raise ValueError(f"n_v must be >= 1, got {self.n_v}")
        if not 0 < self.k <= 1:
            raise ValueError(f"k (BatchTopK fraction) must be in (0, 1], got {self.k}")
        if self.batch_size < 1 or self.n_samples < 1 or self.epochs < 1:
            raise ValueError("batch_size, n_samples and epochs must be >= 1")
        if self.norm not in ("l2", "code"):
            raise ValueError(f"norm must be 'l2' or 'code', got {self.norm!r}")
        if self.reference not in ("random", "mean"):
            raise ValueError(f"reference must be 'random' or 'mean', got {self.reference!r}")

    def ranks(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        if isinstance(self.rank, int):
            return {n: (self.rank,) * max(1, len(s)) for n, s in shapes.items()}
        missing = set(shapes) - set(self.rank)
        if missing:
            raise ValueError(f"rank dict lacks parameter(s) {sorted(missing)}")
        return {n: tuple(self.rank[n]) for n in shapes}


class GradientSource:
    """Per-sample divergence gradients for batches of a fixed data set, ``[B, n_w]``.

    When the data set's Jacobians fit in ``jacobian_limit`` floats they are computed once (vmap of jacrev) and
    each batch's gradients are J_i^T (f_i - y_r) / n_o; otherwise each batch calls vmap(grad(D)). Both are exact.
    """

    def __init__(
        self, model: nn.Module, params: dict[str, Tensor], X: Tensor, jacobian_limit: float, reference: str = "random"
    ):
        self.model, self.params, self.X, self.reference = model, params, X, reference
        self.names = tuple(params)
        with torch.no_grad():
            self.F = outputs(model, params, X)
        self.n_o = self.F.shape[1]
        self.n_w = sum(p.numel() for p in params.values())
        self.J: Tensor | None = None
        if X.shape[0] * self.n_o * self.n_w <= jacobian_limit:
            with torch.no_grad():
                self.J = jacobians(model, params, X)

    def batch(self, idx: Tensor, ref: Tensor) -> Tensor:
        """Gradients for samples ``idx`` with references ``idx[ref]`` (or the mean output, see L3DConfig)."""
        y_ref = self.F[idx][ref] if self.reference == "random" else self.F.mean(0).expand(idx.numel(), -1)
        with torch.no_grad():
            if self.J is not None:
                return torch.einsum("bo,bow->bw", self.F[idx] - y_ref, self.J[idx]) / self.n_o
            return flatten_grads(per_sample_grads(self.model, self.params, self.X[idx], y_ref), self.names)


def batch_topk(c: Tensor, k: float) -> Tensor:
    """0/1 mask keeping the int(k * B * n_v) + 1 largest |c| over the batch (the code's threshold rule)."""
    m = min(c.numel(), int(k * c.numel()) + 1)
    mask = torch.zeros(c.numel(), dtype=c.dtype, device=c.device)
    mask[c.detach().abs().flatten().topk(m).indices] = 1.0
    return mask.view_as(c)


def recon_loss(g: Tensor, g_hat: Tensor) -> Tensor:
    """sum_b ||g_b - g_hat_b||^2 / sum_b ||g_b||^2 (the code's loss; paper's numbers are this value)."""
    return (g - g_hat).pow(2).sum() / (g.pow(2).sum() + 1e-10)


@dataclass
class L3DFit:
    encoder: TuckerBank
    decoder: TuckerBank
    names: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]
    steps: int
    epochs: int
    loss_curve: list[float]  # mean training loss per epoch
    p_act: list[float]  # per subnetwork: fraction of samples passing BatchTopK in the last epoch
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False  # ``out_of_time`` ended training before ``max_steps``

    @property
    def final_loss(self) -> float:
        return self.loss_curve[-1] if self.loss_curve else float("nan")


@dataclass
class L3DRun:
    """One run set up as :func:`train_l3d` sets it up: its data, gradient source, encoder and decoder banks,
    generator (batch order and references) and Adam. Shared by the loop alone and by
    :func:`methods._l3d_group.train_together`."""

    names: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]
    X: Tensor
    cfg: L3DConfig
    max_steps: int | None
    enc: TuckerBank
    dec: TuckerBank
    src: GradientSource
    opt: AdamW
    g: torch.Generator
    t0: float

    @classmethod
    def setup(
        cls, model: nn.Module, names: tuple[str, ...], X: Tensor, cfg: L3DConfig, seed: int, max_steps: int | None
    ) -> L3DRun:
        t0 = time.perf_counter()
        named = dict(model.named_parameters())
        unknown = [n for n in names if n not in named]
        if unknown:
            raise ValueError(f"parameters {unknown} are not in the model; it has {sorted(named)}")
        if not torch.isfinite(X).all():
            raise ValueError("the L3D data set contains NaN or infinite inputs")
        params = {n: named[n].detach() for n in names}
        shapes = {n: tuple(p.shape) for n, p in params.items()}
        g = torch.Generator().manual_seed(seed)
        enc_init = TuckerBank(shapes, cfg.ranks(shapes), cfg.n_v, g, dtype=X.dtype)
        enc_init.normalise(cfg.norm)
        dec = TuckerBank(shapes, cfg.ranks(shapes), cfg.n_v, torch.Generator(), dtype=X.dtype)
        dec.load_state_dict(enc_init.state_dict())  # V^in starts as a copy of the normalised V^out
        enc = enc_init.to(X.device)
        dec = dec.to(X.device)
        src = GradientSource(model, params, X, cfg.jacobian_limit, cfg.reference)
        opt = AdamW([*enc.parameters(), *dec.parameters()], lr=cfg.lr)  # Adam: no weight decay
        return cls(tuple(names), shapes, X, cfg, max_steps, enc, dec, src, opt, g, t0)

    def fit(self, curve: list[float], p_act: Tensor, stopped: bool, steps: int) -> L3DFit:
        if curve and not math.isfinite(curve[-1]):
            raise FloatingPointError(f"L3D training diverged (loss {curve[-1]}) at step {steps}")
        return L3DFit(
            self.enc,
            self.dec,
            self.names,
            self.shapes,
            steps,
            len(curve),
            curve,
            p_act.tolist(),
            time.perf_counter() - self.t0,
            {"jacobian_cache": self.src.J is not None, "n_w": self.src.n_w, "n_o": self.src.n_o},
            stopped_early=stopped,
        )


def train_l3d(
    model: nn.Module,
    names: tuple[str, ...],
    X: Tensor,
    cfg: L3DConfig,
    seed: int,
    max_steps: int | None = None,
    out_of_time: Callable[[], bool] | None = None,
) -> L3DFit:
    """Fit L3D's encoder and decoder to the per-sample gradients of ``model`` on the data ``X``.

    ``out_of_time`` (checked before each step) ends training early, e.g. a :meth:`Budget.timer`."""
    return train_run(L3DRun.setup(model, names, X, cfg, seed, max_steps), out_of_time)


def train_run(run: L3DRun, out_of_time: Callable[[], bool] | None = None) -> L3DFit:
    """The training loop of :func:`train_l3d` on a run already set up."""
    enc, dec, src, opt, g, X, cfg = run.enc, run.dec, run.src, run.opt, run.g, run.X, run.cfg
    N, B = X.shape[0], cfg.batch_size
    spe = math.ceil(N / B)
    total = run.max_steps if run.max_steps is not None else cfg.epochs * spe
    curve: list[float] = []
    p_act = torch.zeros(cfg.n_v, dtype=X.dtype, device=X.device)
    step = epoch = 0
    stopped = False
    while step < total:
        k_eff = WARM_K if epoch <= cfg.warm_start_epochs else cfg.k
        perm = torch.randperm(N, generator=g)
        losses = []
        act_sum = torch.zeros_like(p_act)
        n_seen = 0
        for s in range(spe):
            if step >= total:
                break
            if out_of_time is not None and out_of_time():
                total, stopped = step, True
                break
            idx = perm[s * B : (s + 1) * B].to(X.device)
            b = idx.numel()
            ref = torch.randint(0, b, (b,), generator=g).to(X.device)
            grads = src.batch(idx, ref)
            c = grads @ enc.flat().T
            mask = batch_topk(c, k_eff)
            loss = recon_loss(grads, (c * mask) @ dec.flat())
            opt.zero_grad()
            loss.backward()
            opt.step()
            dec.normalise(cfg.norm)
            losses.append(float(loss.detach()))
            act_sum += mask.sum(0)
            n_seen += b
            step += 1
        if losses:
            curve.append(sum(losses) / len(losses))
            p_act = act_sum / n_seen
            epoch += 1
            if epoch % cfg.lr_step_epochs == 0:
                opt.lr *= cfg.lr_gamma
        if not losses or not math.isfinite(curve[-1]):
            break
    return run.fit(curve, p_act, stopped, step)
