"""Stochastic Parameter Decomposition, the training core (Bushnaq, Braun, Sharkey 2025, arXiv:2506.20790).

Every decomposed matrix ``W [d0, d1]`` is approximated by C rank-1 subcomponents ``U[:, c] V[c, :]``.
Each *site* (one use of a matrix in the forward pass, see :mod:`methods._spd_sites`) has its own
causal-importance (CI) function: one tiny MLP per subcomponent, ``1 -> d_gate (GELU) -> 1``, applied to
the subcomponent's inner activation. All CI MLPs of all sites run as single batched tensor operations
(``[batch, sites, C, d_gate]``), which is where this implementation is fast. Losses follow the paper
and the ``spd-paper`` branch of goodfire-ai/spd: faithfulness, stochastic reconstruction (all sites
masked), layerwise stochastic reconstruction (one site masked at a time), and importance minimality
on the upper-leaky CI. Masks are ``m = g + (1 - g) r`` with fresh ``r ~ U(0, 1)`` for each loss term.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from methods._adamw import AdamW
from methods._schedules import lr_at
from methods._spd_sites import Site, decomposed_sites, run_sites

LEAK = 0.01  # slope of the leaky hard sigmoids (paper section 2; spd-paper code)
CI_CHUNK = 1 << 25  # elements of the CI MLPs' hidden layer computed at once (128 MiB in float32)


def lower_leaky_hard_sigmoid(x: Tensor) -> Tensor:
    """0.01 x below 0, x on [0, 1], 1 above: the CI used for the masks."""
    return torch.where(x > 0, x.clamp(max=1.0), LEAK * x)


def upper_leaky_hard_sigmoid(x: Tensor) -> Tensor:
    """0 below 0, x on [0, 1], 1 + 0.01 (x - 1) above: the CI used for the importance penalty."""
    return torch.where(x > 1, 1 + LEAK * (x - 1), x.clamp(min=0.0))


@dataclass
class SPDConfig:
    C: int = 20
    d_gate: int = 16
    imp_coeff: float = 3e-3  # beta_3, importance minimality
    pnorm: float = 1.0
    faith_coeff: float = 1.0
    stoch_coeff: float = 1.0  # beta_1
    layerwise_coeff: float = 1.0  # beta_2
    lr: float = 1e-3
    schedule: str = "cosine"  # cosine | constant | linear
    warmup: float = 0.0  # fraction of steps with a linear warm-up
    steps: int = 40_000
    batch_size: int = 4096

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "constant", "linear"):
            raise ValueError(f"spd: schedule must be cosine, constant or linear, not {self.schedule!r}")
        for k in ("C", "d_gate", "steps", "batch_size"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"spd: {k} must be a positive integer, not {getattr(self, k)!r}")
        for k in ("imp_coeff", "pnorm", "faith_coeff", "stoch_coeff", "layerwise_coeff", "lr", "warmup"):
            v = float(getattr(self, k))
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"spd: {k} must be a finite non-negative number, not {getattr(self, k)!r}")

    def lr_at(self, step: int) -> float:
        """The spd-paper schedules: cosine is cos(pi/2 * t/(T-1)), decaying to 0; optional warm-up
        (:func:`methods._schedules.lr_at`)."""
        return lr_at(step, self.steps, self.lr, self.schedule, self.warmup, warmup_from_zero=False, clamp=True)


def init_factors(weights: dict[str, Tensor], C: int, generator: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
    """spd-paper ``init_As_and_Bs_``: per matrix, unit-norm random factors ``U [d0, C]``, ``V [C, d1]``, U's
    columns scaled by the projection of W on each rank-1 direction."""
    Us, Vs = [], []
    for W in weights.values():
        W64 = W.detach().cpu().double()
        U = torch.randn(W.shape[0], C, generator=generator, dtype=torch.float64)
        V = torch.randn(C, W.shape[1], generator=generator, dtype=torch.float64)
        U, V = U / U.norm(dim=0, keepdim=True), V / V.norm(dim=1, keepdim=True)
        U = U * torch.einsum("ic,ij,cj->c", U, W64, V)
        Us.append(U.to(W.dtype))
        Vs.append(V.to(W.dtype))
    return Us, Vs


class SPDModel(nn.Module):
    """Subcomponents ``U [d0, C]``, ``V [C, d1]`` per matrix and batched CI MLPs per site."""

    def __init__(self, weights: dict[str, Tensor], sites: list[Site], C: int, d_gate: int, generator: torch.Generator):
        super().__init__()
        self.names = list(weights)
        self.sites = sites
        self.site_param = [self.names.index(s.param) for s in sites]
        Us, Vs = init_factors(weights, C, generator)
        self.U = nn.ParameterList([nn.Parameter(U) for U in Us])
        self.V = nn.ParameterList([nn.Parameter(V) for V in Vs])
        S = len(sites)
        dt = next(iter(weights.values())).dtype
        # spd-paper init_param_: kaiming normal, mlp_in fan 1 with ReLU gain, mlp_out fan d_gate, biases 0
        self.w_in = nn.Parameter((torch.randn(S, C, d_gate, generator=generator) * math.sqrt(2.0)).to(dt))
        self.b_in = nn.Parameter(torch.zeros(S, C, d_gate, dtype=dt))
        self.w_out = nn.Parameter((torch.randn(S, C, d_gate, generator=generator) / math.sqrt(d_gate)).to(dt))
        self.b_out = nn.Parameter(torch.zeros(S, C, dtype=dt))

    def inner(self, k: int, a: Tensor) -> Tensor:
        """Inner activations ``[batch, C]`` of site ``k`` on its input ``a``."""
        i = self.site_param[k]
        return a @ self.U[i] if self.sites[k].transposed else a @ self.V[i].T

    def write(self, k: int, inner: Tensor) -> Tensor:
        """Site ``k``'s output from (masked) inner activations."""
        i = self.site_param[k]
        return inner @ self.V[i] if self.sites[k].transposed else inner @ self.U[i].T

    def ci_raw(self, inner: Tensor) -> Tensor:
        """Every site's CI MLPs at once: ``[batch, S, C] -> [batch, S, C]``.

        The hidden layer is ``[batch, S, C, d_gate]``; past ``CI_CHUNK`` elements (resid MLP 3L at the paper's
        batch: 0.8 G) it is computed in batch chunks and, under autograd, recomputed in the backward pass
        instead of being kept, so memory stays at one chunk. Small models take the single-tensor path.
        """
        rows = max(1, CI_CHUNK // (inner[0].numel() * self.w_in.shape[-1]))
        if inner.shape[0] <= rows:
            return self._ci_mlp(inner)
        if not torch.is_grad_enabled():
            return torch.cat([self._ci_mlp(chunk) for chunk in inner.split(rows)])
        return torch.cat([checkpoint(self._ci_mlp, chunk, use_reentrant=False) for chunk in inner.split(rows)])

    def _ci_mlp(self, inner: Tensor) -> Tensor:
        h = F.gelu(torch.addcmul(self.b_in, inner.unsqueeze(-1), self.w_in))
        return (h * self.w_out).sum(-1) + self.b_out

    def weights(self) -> list[Tensor]:
        return [U @ V for U, V in zip(self.U, self.V, strict=True)]

    def component_norms(self) -> Tensor:
        """Frobenius norm of every subcomponent, ``[n_params, C]``."""
        return torch.stack([U.norm(dim=0) * V.norm(dim=1) for U, V in zip(self.U, self.V, strict=True)])


@dataclass
class TrainLog:
    steps: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


class SPDTrainer:
    """Runs SPD on one network; ``sample(n, generator)`` draws CPU inputs from its training distribution."""

    def __init__(
        self,
        model: nn.Module,
        params: dict[str, Tensor],
        sample: Callable[[int, torch.Generator], Tensor],
        cfg: SPDConfig,
        seed: int,
        device: str = "cpu",
    ):
        self.net, self.params, self.sample_fn, self.cfg, self.device = model, params, sample, cfg, device
        self.g_data = torch.Generator().manual_seed(seed)
        self.g_mask = torch.Generator(device=device).manual_seed(seed + 1)
        self.sites = decomposed_sites(model, params, self.sample(8), "spd")
        self.spd = SPDModel(params, self.sites, cfg.C, cfg.d_gate, torch.Generator().manual_seed(seed)).to(device)
        self.n_weights = sum(p.numel() for p in params.values())

    def sample(self, n: int) -> Tensor:
        return self.sample_fn(n, self.g_data).to(self.device)

    def target_pass(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The target's output and the inner activations ``[batch, S, C]`` of every site."""
        with torch.no_grad():
            out, _, inputs = run_sites(self.net, self.params, x)
        inner = torch.stack([self.spd.inner(k, a) for k, a in enumerate(inputs)], dim=1)
        return out, inner

    def importances(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(g, g_up): lower- and upper-leaky causal importances ``[batch, S, C]``."""
        _, inner = self.target_pass(x)
        raw = self.spd.ci_raw(inner)
        return lower_leaky_hard_sigmoid(raw), upper_leaky_hard_sigmoid(raw)

    def ci_values(self, x: Tensor) -> Tensor:
        """Causal importances clipped to [0, 1], ``[rows, S, C]`` (the exported attributions)."""
        _, inner = self.target_pass(x)
        return lower_leaky_hard_sigmoid(self.spd.ci_raw(inner)).clamp(0, 1)

    def masked_forward(self, x: Tensor, masks: dict[int, Tensor]) -> Tensor:
        """The network with site k replaced by its subcomponents under ``masks[k]`` (others keep W)."""

        def replace(k: int, a: Tensor) -> Tensor | None:
            m = masks.get(k)
            return None if m is None else self.spd.write(k, self.spd.inner(k, a) * m)

        out, _, _ = run_sites(self.net, self.params, x, replace)
        return out

    def losses(self, x: Tensor) -> dict[str, Tensor]:
        cfg = self.cfg
        target, inner = self.target_pass(x)
        raw = self.spd.ci_raw(inner)
        g, g_up = lower_leaky_hard_sigmoid(raw), upper_leaky_hard_sigmoid(raw)
        S = g.shape[1]

        def stochastic(k: int) -> Tensor:
            r = torch.rand(g[:, k].shape, generator=self.g_mask, device=self.device, dtype=g.dtype)
            return g[:, k] + (1 - g[:, k]) * r

        faith = (
            sum(((W - Wh) ** 2).sum() for W, Wh in zip(self.params.values(), self.spd.weights(), strict=True))
            / self.n_weights
        )
        out = {"faith": faith, "imp": (g_up**cfg.pnorm).sum((1, 2)).mean()}
        if cfg.stoch_coeff:
            out["stoch"] = F.mse_loss(self.masked_forward(x, {k: stochastic(k) for k in range(S)}), target)
        if cfg.layerwise_coeff:
            out["layerwise"] = sum(F.mse_loss(self.masked_forward(x, {k: stochastic(k)}), target) for k in range(S)) / S
        out["total"] = (
            cfg.faith_coeff * faith
            + cfg.imp_coeff * out["imp"]
            + cfg.stoch_coeff * out.get("stoch", 0.0)
            + cfg.layerwise_coeff * out.get("layerwise", 0.0)
        )
        return out

    def train(self, log_every: int = 0, out_of_time: Callable[[], bool] | None = None) -> TrainLog:
        """Run ``cfg.steps`` steps, or fewer where ``out_of_time()`` (checked after each) says to stop."""
        cfg = self.cfg
        opt = AdamW(self.spd.parameters(), lr=cfg.lr)
        log = TrainLog()
        t0 = time.perf_counter()
        for step in range(cfg.steps):
            opt.lr = cfg.lr_at(step)
            terms = self.losses(self.sample(cfg.batch_size))
            if not torch.isfinite(terms["total"]):
                raise FloatingPointError(f"spd: loss became {float(terms['total'])} at step {step}")
            opt.zero_grad()
            terms["total"].backward()
            opt.step()
            log.steps = step + 1
            if log_every and (step % log_every == 0 or step == cfg.steps - 1):
                log.history.append({"step": step, **{k: float(v.detach()) for k, v in terms.items()}})
            if out_of_time is not None and step < cfg.steps - 1 and out_of_time():
                log.stopped_early = True
                break
        log.seconds = time.perf_counter() - t0
        return log
