"""Several L3D runs of the same shapes trained as one batched model (seeds together).

An L3D step on a toy model is a few dozen small tensor operations (arXiv:2504.00194 Algorithm 1; the loop is
:func:`methods._l3d_train.train_run`), so much of its time is Python and dispatch: N runs stacked along a
leading run dimension cost less than N steps. Each run keeps what it has alone (its data, gradient source,
encoder and decoder, generator); a step gathers every run's batch, stacks the runs' Tucker factors and computes
each term with the same operations on one more dimension. Three things stay one per run, because on a CPU the
batched form adds in another order: the two products with the banks (a batched product's backward pass), the
loss's sums (a sum over a stacked tensor on two threads) and each run's mean output. One Adam updates every
run's factors with the same arithmetic per tensor as each run's own. So each run gives the same fit, bit for
bit, as alone (``tests/test_seed_groups.py``). Runs of different networks with the same shapes could stack too;
the headline's toy instances differ in their sizes, so only seeds of one toy model are grouped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from methods._adamw import AdamW
from methods._l3d_train import WARM_K, L3DConfig, L3DFit, L3DRun, recon_loss
from methods._seed_groups import aligned


def can_train_together(runs: Sequence[L3DRun]) -> bool:
    """True when the runs differ only in their network's values, data and seed: the same decomposed shapes,
    settings, data size, device and gradient source (all with cached Jacobians)."""
    if len(runs) < 2:
        return False
    first = runs[0]
    return all(
        r.shapes == first.shapes
        and r.cfg == first.cfg
        and r.X.shape == first.X.shape
        and r.X.device == first.X.device
        and r.X.dtype == first.X.dtype
        and r.src.J is not None
        and r.src.J.shape == first.src.J.shape  # type: ignore[union-attr]
        and r.max_steps == first.max_steps
        for r in runs
    )


@dataclass
class _Stacked:
    """The runs' gradient sources stacked: outputs ``F [N, samples, n_o]`` and Jacobians ``J [N, samples, n_o,
    n_w]`` (no copy where there is one run)."""

    F: Tensor
    J: Tensor
    mean: Tensor  # [N, n_o]: each run's mean output (reference "mean")

    @classmethod
    def of(cls, runs: Sequence[L3DRun]) -> _Stacked:
        J = torch.stack([r.src.J for r in runs])  # type: ignore[misc]
        return cls(torch.stack([r.src.F for r in runs]), J, torch.stack([r.src.F.mean(0) for r in runs]))


def _dense_flat(banks: Sequence, eqs: Sequence[str], n_v: int) -> Tensor:
    """Every run's ``bank.flat()`` at once, ``[N, n_v, n_w]``: the same einsum with a leading run index."""
    first = banks[0]
    parts = []
    for i, _ in enumerate(first.names):
        ops = [torch.stack([b._parts[i][j] for b in banks]) for j in range(len(first._parts[i]))]
        parts.append(torch.einsum(eqs[i], *ops).reshape(len(banks), n_v, -1))
    return torch.cat(parts, dim=2)


def _run_eq(eq: str) -> str:
    """``"az,aAz->zA"`` -> ``"yaz,yaAz->yzA"``: the Tucker expansion with a leading run index (``y`` is free:
    the expansion strings use lower-case letters from ``a`` for ranks, ``z`` for the subnetwork)."""
    ins, out = eq.split("->")
    return ",".join("y" + s for s in ins.split(",")) + "->y" + out


def train_together(
    runs: Sequence[L3DRun], out_of_time: Callable[[], bool] | None = None
) -> list[L3DFit | FloatingPointError]:
    """:func:`~methods._l3d_train.train_l3d` for every run at once. A run whose loss becomes non-finite ends
    with its error at the end of that epoch, as alone (the others go on unchanged); all stop together where
    ``out_of_time()`` says so."""
    if not can_train_together(runs):
        raise ValueError("l3d: these runs cannot train together (different shapes, settings or data size)")
    cfg: L3DConfig = runs[0].cfg
    n = len(runs)
    src = _Stacked.of(runs)
    n_o = runs[0].src.n_o
    eqs = [_run_eq(e) for e in runs[0].enc._eq]
    N, B = runs[0].X.shape[0], cfg.batch_size
    spe = math.ceil(N / B)
    total = runs[0].max_steps if runs[0].max_steps is not None else cfg.epochs * spe
    live = list(range(n))
    curves: list[list[float]] = [[] for _ in runs]
    p_act = [torch.zeros(cfg.n_v, dtype=runs[0].X.dtype, device=runs[0].X.device) for _ in runs]
    failed: dict[int, FloatingPointError] = {}
    # one Adam over every run's factors: per tensor the same arithmetic as each run's own, a run that left the
    # group gets no gradient and so no update, and all share the lr
    opt = AdamW([p for r in runs for p in r.opt.params], lr=cfg.lr)
    step = epoch = 0
    stopped = False
    while step < total and live:
        k_eff = WARM_K if epoch <= cfg.warm_start_epochs else cfg.k
        perms = [torch.randperm(N, generator=runs[j].g) for j in live]
        losses: list[list[float]] = [[] for _ in live]
        act_sum = torch.zeros(len(live), cfg.n_v, dtype=p_act[0].dtype, device=p_act[0].device)
        n_seen = 0
        for s in range(spe):
            if step >= total:
                break
            if out_of_time is not None and out_of_time():
                total, stopped = step, True
                break
            idx = torch.stack([p[s * B : (s + 1) * B] for p in perms]).to(runs[0].X.device)  # [L, b]
            b = idx.shape[1]
            ref = torch.stack([torch.randint(0, b, (b,), generator=runs[j].g) for j in live]).to(idx.device)
            grads = _batch_grads(src, idx, ref, cfg.reference, n_o)  # [L, b, n_w]
            group = [runs[j] for j in live]
            enc = _dense_flat([r.enc for r in group], eqs, cfg.n_v)  # [L, n_v, n_w]
            # each run's products and their gradients on tensors of its own (methods/_seed_groups.py): a slice
            # of a stacked tensor would hand BLAS an operand at another alignment than alone
            cs = [aligned(gi) @ aligned(e).T for gi, e in zip(grads, enc, strict=True)]  # L x [b, n_v]
            mask = _batch_topk(torch.stack([ci.detach() for ci in cs]), k_eff)
            dec = _dense_flat([r.dec for r in group], eqs, cfg.n_v)
            g_hat = [(ci * mi) @ aligned(d) for ci, mi, d in zip(cs, mask, dec, strict=True)]
            loss = torch.stack([recon_loss(gi, hi) for gi, hi in zip(grads, g_hat, strict=True)])
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
            for r in group:
                r.dec.normalise(cfg.norm)
            for i, v in enumerate(loss.detach().tolist()):
                losses[i].append(v)
            act_sum += mask.sum(1)
            n_seen += b
            step += 1
        if not losses[0]:
            break
        for i, j in enumerate(live):
            curves[j].append(sum(losses[i]) / len(losses[i]))
            p_act[j] = act_sum[i] / n_seen
        epoch += 1
        if epoch % cfg.lr_step_epochs == 0:
            opt.lr *= cfg.lr_gamma
        for j in live:
            if not math.isfinite(curves[j][-1]):
                failed[j] = FloatingPointError(f"L3D training diverged (loss {curves[j][-1]}) at step {step}")
        if failed.keys() & set(live):
            keep = [i for i, j in enumerate(live) if j not in failed]
            live = [live[i] for i in keep]
            src = _Stacked(src.F[keep], src.J[keep], src.mean[keep])
    return [failed[j] if j in failed else runs[j].fit(curves[j], p_act[j], stopped, step) for j in range(n)]


def _batch_grads(src: _Stacked, idx: Tensor, ref: Tensor, reference: str, n_o: int) -> Tensor:
    """:meth:`GradientSource.batch` of every live run: ``[L, b, n_w]``. The rows are gathered from the runs'
    samples laid end to end (one ``index_select``, as fast as one run's gather)."""
    L, b = idx.shape
    rows = (idx + torch.arange(L, device=idx.device).unsqueeze(1) * src.F.shape[1]).flatten()
    F = src.F.flatten(0, 1).index_select(0, rows).view(L, b, -1)  # [L, b, n_o]
    if reference == "random":
        at = (ref + torch.arange(L, device=ref.device).unsqueeze(1) * b).flatten()
        y_ref = F.flatten(0, 1).index_select(0, at).view(L, b, -1)
    else:
        y_ref = src.mean.unsqueeze(1).expand(-1, b, -1)
    J = src.J.flatten(0, 1).index_select(0, rows).view(L, b, *src.J.shape[2:])
    with torch.no_grad():
        return torch.einsum("lbo,lbow->lbw", F - y_ref, J) / n_o


def _batch_topk(c: Tensor, k: float) -> Tensor:
    """:func:`~methods._l3d_train.batch_topk` of every run: ``[L, b, n_v]``."""
    per = c[0].numel()
    m = min(per, int(k * per) + 1)
    mask = torch.zeros(c.shape[0], per, dtype=c.dtype, device=c.device)
    mask.scatter_(1, c.detach().abs().flatten(1).topk(m, dim=1).indices, 1.0)
    return mask.view_as(c)
