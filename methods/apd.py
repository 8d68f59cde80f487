"""APD: Attribution-based Parameter Decomposition (Braun et al. 2025, arXiv:2501.14926).

C components, each spanning every decomposed matrix (full rank by default), are trained so that
(1) they sum to the target's weights (faithfulness), (2) the few components with the largest gradient
attributions on an input, chosen by batch top-k, reproduce the target's output on it (minimality), and
(3) the active components have a small Schatten-p norm (simplicity). The maths is in
:mod:`methods._apd_core`; hyperparameters and their sources are in ``docs/reference/apd_spd.md``
section 3.1 and ``docs/methods/apd.md``.

Per-model defaults follow the APD paper's appendix and the ``ApolloResearch/apd`` configs
(``spd/experiments/tms/tms_topk_config.yaml``, ``spd/experiments/resid_mlp/resid_mlp_topk_config.yaml``);
where the two disagree the config (which produced the published runs) is used and the paper's value is
noted. ``steps`` on TMS is shortened from the paper's 20k: see ``docs/methods/apd.md`` for the
measured success rates that justify it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from benchmark.decomposition import Decomposition, LowRank, RunRecord
from benchmark.method import Budget, Method
from benchmark.registry import METHODS
from benchmark.toy import Target
from methods import _apd_core as core
from methods._apd_group import train_together
from methods._seed_groups import rows_aligned

_TMS_5_2 = {  # APD appendix / tms_topk_config.yaml (TMS 5-2 block); m = min(5, 2) + 1 as TMSSPDModel
    "C": 5,
    "m": 3,
    "topk": 0.211,
    "batch_size": 2048,
    "lr": 3e-2,
    "lr_schedule": "constant",
    "lr_warmup_pct": 0.05,
    "faithfulness_coeff": 1.0,
    "minimality_coeff": 1.0,
    "simplicity_coeff": 0.7,
    "schatten_p": 1.0,
    "init": "xavier_normal",
    "steps": 5_000,
    # the reference's xavier fans include its 12-instance axis, so its factors start ~0.42x smaller than ours
    "init_scale": 0.42,
}
_TMS_40_10_CONFIG = {  # tms_topk_config.yaml (TMS 40-10)
    "C": 40,
    "m": 11,
    "topk": 2.0,
    "batch_size": 2048,
    "lr": 1e-3,
    "lr_schedule": "cosine",
    "lr_warmup_pct": 0.05,
    "faithfulness_coeff": 1.0,
    "minimality_coeff": 10.0,
    "simplicity_coeff": 15.0,
    "schatten_p": 0.9,
    "init": "xavier_normal",
    "steps": 20_000,
}
_TMS_40_10 = {  # the settings of the run behind the paper's numbers (APD appendix: C 50, topk 1, coefficients
    # 1/10/20; the reference's spd_interp.py loads that run), not the config file's C 40, topk 2, simplicity 15.
    # init_scale 0.335: the reference's xavier fans include its 3-instance axis. Measured, 20k steps, seeds
    # 0/1/2: MMCS 0.978/0.973/0.976, ML2R 0.914/0.892/0.912, against the config's 0.944/0.952/0.938 and
    # 0.80/0.83/0.77; the paper's 0.996 is not reached (docs/methods/apd.md, TMS 40-10 reproduction attempts)
    **_TMS_40_10_CONFIG,
    "C": 50,
    "topk": 1.0,
    "simplicity_coeff": 20.0,
    "init_scale": 0.335,
}
_RESID_MLP1 = {  # resid_mlp_topk_config.yaml (1 layer); the paper says 40k steps and batch 2048
    "C": 130,
    "m": None,
    "topk": 1.28,
    "batch_size": 256,
    "lr": 1e-3,
    "lr_schedule": "cosine",
    "lr_warmup_pct": 0.01,
    "faithfulness_coeff": 1.0,
    "minimality_coeff": 1.0,
    "simplicity_coeff": 10.0,
    "schatten_p": 0.9,
    "act_recon_coeff": 1.0,
    "act_recon_relu": True,
    "act_recon_params": ("layers.0.W_in",),
    "unit_norm": True,
    # ResidualMLPSPDConfig's init: xavier_normal, gain = task init_scale 2.0, on [1, C, a, b] factor tensors
    "init": "xavier_normal",
    "init_scale": 2.0,
    "init_instances": 1,
    "steps": 10_000,
    "num_threads": None,  # big matmuls: torch default
}


#: The blind rule's cap on C: each APD component holds a full-rank copy of every decomposed matrix, so a step
#: costs C times one model's attributions; 10 keeps a headline cell near 3-4 minutes on one core.
MAX_BLIND_C = 10


@METHODS.register("apd")
class APD(Method):
    version = "1"
    paper = "Braun, Bushnaq, Heimersheim, Mendel, Sharkey 2025, arXiv:2501.14926"

    @dataclass
    class Config:
        # number of components. None: the blind rule, min(largest matrix side, MAX_BLIND_C): the paper's TMS runs take
        # one component per feature, the larger side there; the cap bounds APD's cost, linear in C (docs/protocol.md)
        C: int | None = None
        m: int | None = None  # rank of each component in each matrix; None = full rank min(rows, cols)
        topk: float = 1.0  # mean number of active components per input (batch top-k)
        batch_topk: bool = True
        batch_size: int = 2048
        # 10,000: the knee of the headline toys' score-against-steps curves (one-to-one score within 0.01 of 20,000
        # steps' at half the cost; docs/methods/apd.md); the paper's TMS runs take 20,000 (per-model settings)
        steps: int = 10_000
        lr: float = 1e-3
        lr_schedule: str = "cosine"  # constant | linear | cosine (quarter cosine, as the reference code)
        lr_warmup_pct: float = 0.05
        faithfulness_coeff: float = 1.0
        minimality_coeff: float = 1.0
        simplicity_coeff: float = 1.0
        schatten_p: float = 1.0
        act_recon_coeff: float = 0.0  # output of each decomposed matrix under top-k vs the target (resid MLP)
        act_recon_relu: bool = False  # compare ReLU of those outputs (the reference's resid-MLP choice)
        act_recon_params: list[str] | None = None  # restrict act recon to these parameters (None: first use of each)
        unit_norm: bool = False  # keep the input-side factor at unit norm (reference's resid MLP 1L)
        attribution_point: str = "target"  # gradients at the target's weights, or "apd": at sum_c P_c
        init: str = "xavier_normal"
        init_scale: float = 1.0
        init_instances: int | None = None  # reference fan convention with this many instances (_apd_core.init_factors)
        attribution_chunk: int | None = None  # vmap chunk size over components (memory bound); None: all at once
        log_every: int = 1000
        # intra-op threads while training (restored after): APD's per-step ops are tiny on the toy models, and
        # on a shared 2-core machine 2 threads made a block_mlp run 25x slower than 1; None leaves torch's setting
        num_threads: int | None = 1

    per_model_defaults: dict[str, dict[str, Any]] = {
        "tms_5-2": _TMS_5_2,
        "tms_5-2-id": {**_TMS_5_2, "C": 7},  # the paper reports APD failing here; C = 5 + 2 mechanisms
        "tms_40-10": _TMS_40_10,
        # no paper settings (APD was not run on it): tms_topk_config.yaml's 40-10 recipe with C = 40 + 10. The paper
        # run's 40-10 settings made it worse at the leaderboard's cap (MMCS 0.82-0.85 against 0.91-0.94)
        "tms_40-10-id": {**_TMS_40_10_CONFIG, "C": 50},
        "resid_mlp1": _RESID_MLP1,
        "resid_mlp1-nomix": _RESID_MLP1,  # a control runs with the settings of the toy it controls
        # Toy models outside the paper: its TMS 5-2 recipe with its rule C = number of features and
        # topk = p_active x number of features (docs/reference/apd_spd.md 3.1); our choice, not the paper's.
        "parallel_tms": {**_TMS_5_2, "C": 15, "m": 7, "topk": 1.4},  # all-zero inputs dropped: 0.75 / (1 - 0.95^15)
        "block_mlp": {**_TMS_5_2, "C": 4, "m": None, "topk": 1.0},
        "shared_neurons": {**_TMS_5_2, "C": 6, "m": None, "topk": 1.2},
    }

    trains_seeds_together = True
    on_log = None  # optional diagnostics hook: called as on_log(step, {param: [C, *shape]}) at each log step

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        hp = self.hparams(target.spec.name)
        if hp["C"] is None:
            hp["C"] = min(target.largest_side(), MAX_BLIND_C)
        _check_hparams(hp)
        before = torch.get_num_threads()
        if hp["num_threads"] is not None:
            torch.set_num_threads(hp["num_threads"])
        try:
            return self._decompose(target, budget, seed, device, hp)
        finally:
            torch.set_num_threads(before)

    def _decompose(self, target: Target, budget: Budget, seed: int, device: str, hp: dict[str, Any]) -> Decomposition:
        out_of_time = budget.timer()
        run = _Run(target, budget, seed, device, hp)
        run.on_log = self.on_log
        step = 0
        for step in range(run.steps):
            x = run.before_step(step)
            losses = self._losses(run.f, run.theta, run.L, run.R, x, hp, run.n_params, run.sites, target, run.f_attr)
            run.after_step(step, losses, self._total(losses, hp))
            if step < run.steps - 1 and out_of_time():
                run.stopped_early = True
                break
        return run.finish(step + 1)

    def decompose_seeds(
        self, target: Target, budget: Budget, seeds: Sequence[int], device: str = "cpu"
    ) -> list[Decomposition | Exception]:
        """The seeds trained as one batched model (:mod:`methods._apd_group`), each the same decomposition, bit
        for bit, as :meth:`decompose` gives alone; one after another where they cannot train together."""
        hp = self.hparams(target.spec.name)
        if hp["C"] is None:
            hp["C"] = min(target.largest_side(), MAX_BLIND_C)
        _check_hparams(hp)
        alike = hp["attribution_point"] == "target" and self.on_log is None and rows_aligned(hp["batch_size"])
        if len(seeds) < 2 or not alike:  # a run's rows in whole blocks: methods/_seed_groups.py
            return super().decompose_seeds(target, budget, seeds, device)
        before = torch.get_num_threads()
        if hp["num_threads"] is not None:
            torch.set_num_threads(hp["num_threads"])
        try:
            return train_together(self, target, budget, seeds, device, hp)
        finally:
            torch.set_num_threads(before)

    @staticmethod
    def _total(losses: dict[str, Tensor], hp: dict[str, Any]) -> Tensor:
        return sum(hp[f"{k}_coeff"] * v for k, v in losses.items())  # type: ignore[return-value]

    @staticmethod
    def _losses(
        f: core.Forward,
        theta: dict[str, Tensor],
        L: dict[str, Tensor],
        R: dict[str, Tensor],
        x: Tensor,
        hp: dict[str, Any],
        n_params: int,
        sites: list[tuple[str, bool]],
        target: Target,
        f_attr: core.Forward | None = None,
    ) -> dict[str, Tensor]:
        """The loss terms of one step; ``f_attr`` (default ``f``) computes the target's output and attributions."""
        f_attr = f if f_attr is None else f_attr
        P = core.component_weights(L, R)
        with torch.no_grad():
            Pd = {n: t.detach() for n, t in P.items()}
            if hp["attribution_point"] == "target":  # the JVPs' forward pass is the target's output
                attr, target_out = core.attributions_and_output(f_attr, theta, Pd, x, hp["attribution_chunk"])
            else:
                target_out = f_attr(theta, x)
                at = {n: t.sum(0) for n, t in Pd.items()}
                attr = core.gradient_attributions(f_attr, at, Pd, x, hp["attribution_chunk"])
            mask = core.topk_mask(attr, hp["topk"], hp["batch_topk"])
        W_b = core.masked_weights(P, mask)
        # with the activation loss each weight has three uses; through a cat, as when seeds train together
        # (methods/_apd_group.py concatenates the runs' weights), their gradients add in the same order
        W_in = {k: torch.cat([w]) for k, w in W_b.items()} if hp["act_recon_coeff"] else W_b
        out = core.per_input_forward(f, W_in, x)
        losses = {
            "faithfulness": core.faithfulness_loss(theta, P, n_params),
            "minimality": ((out - target_out) ** 2).mean(),
            "simplicity": core.schatten_loss(L, R, mask, hp["schatten_p"], n_params),
        }
        if hp["act_recon_coeff"]:
            losses["act_recon"] = _act_recon(target, theta, W_b, x, sites, hp["act_recon_relu"])
        return losses


class _Run:
    """One APD run: its factors, optimizer, data generator and log, set up and finished as :meth:`APD.decompose`
    does (shared with :func:`methods._apd_group.train_together`)."""

    def __init__(self, target: Target, budget: Budget, seed: int, device: str, hp: dict[str, Any]):
        self.t0 = time.perf_counter()
        self.target, self.hp, self.device, self.seed = target, hp, device, seed
        self.steps = budget.steps_or(hp["steps"])
        dev = torch.device(device)
        self.model = target.model.to(dev)
        self.names = target.decomposed
        self.theta = {n: p.detach().clone() for n, p in target.params().items()}
        shapes = {n: t.shape for n, t in self.theta.items()}
        self.n_params = sum(t.numel() for t in self.theta.values())
        self.f = core.make_forward(self.model, self.names)
        self.f_attr = core.make_forward(self.model, self.names, fast=True)
        g_init = torch.Generator().manual_seed(seed)
        L0, R0 = core.init_factors(shapes, hp["C"], hp["m"], hp["init"], hp["init_scale"], g_init, hp["init_instances"])
        self.L = {n: t.to(dev).requires_grad_(True) for n, t in L0.items()}
        self.R = {n: t.to(dev).requires_grad_(True) for n, t in R0.items()}
        self.opt = core.Adam([*self.L.values(), *self.R.values()])
        self.g_data = torch.Generator().manual_seed(seed + 1)
        self.sites = _site_plan(target, hp, self.names)
        self.input_side = _input_sides(target, self.names)
        self.log: list[dict[str, float]] = []
        self.stopped_early = False
        self.on_log: Any = None  # APD.on_log

    def before_step(self, step: int) -> Tensor:
        """Unit-norm the factors where asked, and draw this step's batch."""
        if self.hp["unit_norm"]:
            _normalise(self.R, self.L, self.input_side)
        return self.target.sample(self.hp["batch_size"], self.g_data).to(self.device)

    def check(self, step: int, losses: dict[str, Tensor], loss: Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"APD loss became {float(loss.detach())} at step {step}: {_fmt(losses)}; "
                "lower lr or check the target's outputs"
            )

    def update(self, step: int, losses: dict[str, Tensor], loss: Tensor) -> None:
        """The optimizer step after the backward pass, and the log."""
        hp = self.hp
        if hp["unit_norm"]:
            _project_grads(self.R, self.L, self.input_side)
        self.opt.step(core.lr_at(step, self.steps, hp["lr"], hp["lr_schedule"], hp["lr_warmup_pct"]))
        if hp["log_every"] and (step % hp["log_every"] == 0 or step == self.steps - 1):
            self.log.append(
                {"step": step, "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in losses.items()}}
            )
            if self.on_log is not None:
                self.on_log(step, {n: (self.L[n] @ self.R[n]).detach().cpu() for n in self.L})

    def after_step(self, step: int, losses: dict[str, Tensor], loss: Tensor) -> None:
        """One run alone: check, backward, update."""
        self.check(step, losses, loss)
        self.opt.zero_grad()
        loss.backward()
        self.update(step, losses, loss)

    def finish(self, steps_run: int) -> Decomposition:
        hp, theta, names = self.hp, self.theta, self.names
        with torch.no_grad():
            Lf = {n: t.detach().cpu() for n, t in self.L.items()}
            Rf = {n: t.detach().cpu() for n, t in self.R.items()}
            P = core.component_weights(Lf, Rf)
            norms = torch.stack([sum((P[n][c] ** 2).sum() for n in P).sqrt() for c in range(hp["C"])])
            rel_faith = math.sqrt(
                sum(float(((theta[n].cpu() - P[n].sum(0)) ** 2).sum()) for n in P)
                / sum(float((theta[n].cpu() ** 2).sum()) for n in P)
            )
        components = [{n: LowRank(Lf[n][c], Rf[n][c]) for n in names} for c in range(hp["C"])]
        self.model.to("cpu")
        record = RunRecord(
            wall_time_s=time.perf_counter() - self.t0,
            steps=steps_run,
            stopped_early=self.stopped_early,
            hparams={**hp, "steps": self.steps},
            loss_curve=[(e["step"], e["loss"]) for e in self.log],
            extra={
                "log": self.log,
                "component_norms": norms.tolist(),
                "relative_faithfulness_error": rel_faith,
                "device": self.device,
            },
        )
        return Decomposition(
            components, attributions=_attribution_fn(self.target, names, theta, P, hp), faithful=True, record=record
        )


def _check_hparams(hp: dict[str, Any]) -> None:
    if not isinstance(hp["C"], int) or hp["C"] < 1:
        raise ValueError(f"APD needs C >= 1 components, got {hp['C']!r}")
    if not hp["topk"] > 0:
        raise ValueError(f"APD topk must be > 0, got {hp['topk']!r}")
    if hp["batch_topk"] and int(hp["topk"] * hp["batch_size"]) < 1:
        raise ValueError(f"topk * batch_size = {hp['topk'] * hp['batch_size']} selects no component")
    for k in ("num_threads", "init_instances"):
        if hp[k] is not None and not (isinstance(hp[k], int) and hp[k] >= 1):
            raise ValueError(f"{k} must be None or an int >= 1, got {hp[k]!r}")
    if hp["attribution_point"] not in ("target", "apd"):
        raise ValueError(f"attribution_point must be 'target' or 'apd', got {hp['attribution_point']!r}")
    if hp["lr_schedule"] not in ("constant", "linear", "cosine"):
        raise ValueError(f"unknown lr_schedule {hp['lr_schedule']!r}; known: constant, linear, cosine")
    for k in ("faithfulness_coeff", "minimality_coeff", "simplicity_coeff", "act_recon_coeff", "lr"):
        if not (isinstance(hp[k], int | float) and math.isfinite(hp[k]) and hp[k] >= 0):
            raise ValueError(f"APD {k} must be a finite number >= 0, got {hp[k]!r}")


def _fmt(losses: dict[str, Tensor]) -> str:
    return ", ".join(f"{k}={float(v.detach()):.3g}" for k, v in losses.items())


def _site_plan(target: Target, hp: dict[str, Any], names: tuple[str, ...]) -> list[tuple[str, bool]]:
    """Which (parameter, transposed) uses the activation-reconstruction loss compares."""
    if not hp["act_recon_coeff"]:
        return []
    probe = target.sample(2, torch.Generator().manual_seed(0))
    plan, seen = [], set()
    for s in target.sites(probe):
        keep = s.param in hp["act_recon_params"] if hp["act_recon_params"] is not None else s.param not in seen
        if keep and s.param in names:
            plan.append((s.param, s.transposed))
        seen.add(s.param)
    if not plan:
        raise ValueError(f"act_recon_params {hp['act_recon_params']!r} names no decomposed parameter use")
    return plan


def _act_recon(
    target: Target,
    theta: dict[str, Tensor],
    W_b: dict[str, Tensor],
    x: Tensor,
    plan: list[tuple[str, bool]],
    relu: bool,
) -> Tensor:
    """Mean over inputs of sum over units of (top-k output - target output)^2, / total units (APD's act recon).

    Each matrix reads the target's own activations at that point (exact for the first layer, as in the
    reference's one-layer residual MLP).
    """
    with torch.no_grad():
        sites = {(s.param, s.transposed): s.inputs.to(x.device) for s in target.sites(x)}
    total, width = torch.zeros((), device=x.device), 0
    for name, transposed in plan:
        a = sites[(name, transposed)]
        eq = "bi,bij->bj" if transposed else "bi,bji->bj"
        ref = a @ theta[name] if transposed else a @ theta[name].T
        got = torch.einsum(eq, a, W_b[name])
        if relu:
            ref, got = torch.relu(ref), torch.relu(got)
        total = total + ((got - ref) ** 2).sum(-1).mean()
        width += ref.shape[-1]
    return total / width


def _input_sides(target: Target, names: tuple[str, ...]) -> dict[str, str]:
    """Per matrix, the factor on its input side: ``R`` (columns) for ``x @ W.T`` uses, ``L`` for ``x @ W``."""
    probe = target.sample(2, torch.Generator().manual_seed(0))
    first: dict[str, bool] = {}
    for s in target.sites(probe):
        first.setdefault(s.param, s.transposed)
    return {n: ("L" if first.get(n, False) else "R") for n in names}


def _normalise(R: dict[str, Tensor], L: dict[str, Tensor], side: dict[str, str]) -> None:
    """Unit-norm the input-side factor of each rank-one piece (``spd/models/base.py:set_As_to_unit_norm``)."""
    with torch.no_grad():
        for n in R:
            if side[n] == "R":
                R[n].div_(R[n].norm(dim=2, keepdim=True).clamp_min(1e-12))
            else:
                L[n].div_(L[n].norm(dim=1, keepdim=True).clamp_min(1e-12))


def _project_grads(R: dict[str, Tensor], L: dict[str, Tensor], side: dict[str, str]) -> None:
    """Remove the gradient component parallel to each unit-norm vector (``fix_normalized_adam_gradients``)."""
    with torch.no_grad():
        for n in R:
            t, dim = (R[n], 2) if side[n] == "R" else (L[n], 1)
            if t.grad is not None:
                t.grad.sub_((t.grad * t).sum(dim, keepdim=True) * t)


def _attribution_fn(
    target: Target, names: tuple[str, ...], theta: dict[str, Tensor], P: dict[str, Tensor], hp: dict[str, Any]
):
    """Per-input attributions of the trained components: A_c(x) = sqrt(mean_o (d f_o/d theta . P_c)^2).

    The paper's definition (APD section 2); its ranking is the one top-k used in training.
    """
    model = target.model
    theta_cpu = {n: t.detach().cpu() for n, t in theta.items()}
    P_cpu = {n: t.detach().cpu() for n, t in P.items()}

    def attributions(inputs: Tensor) -> Tensor:
        if not torch.is_tensor(inputs) or not torch.isfinite(inputs).all():
            raise ValueError("APD attributions need a finite input tensor")
        model.to("cpu")
        f = core.make_forward(model, names, fast=True)
        at = theta_cpu if hp["attribution_point"] == "target" else {n: t.sum(0) for n, t in P_cpu.items()}
        chunks = []
        with torch.no_grad():
            for xb in inputs.split(4096):
                out_dim = max(1, f(theta_cpu, xb[:1]).numel())
                chunks.append((core.gradient_attributions(f, at, P_cpu, xb, hp["attribution_chunk"]) / out_dim).sqrt())
        return torch.cat(chunks).float()

    return attributions
