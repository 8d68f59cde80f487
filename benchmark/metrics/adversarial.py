"""Adversarial faithfulness: how far the network's output moves under the worst masks a fresh PGD search finds.

VPD (Bushnaq et al., Goodfire, May 2026, *Interpreting Language Model Parameters*) calls this its most
important evaluation: stochastic-mask reconstruction is easy to game when it is trained on, a fresh
adversary is not. For a decomposition whose attributions are causal importances ``g [B, C]`` in [0, 1]
(``Decomposition.importances``) and whose components claim to sum to the weights, each decomposed
parameter on input b is rebuilt as

    W_p(b) = sum_c (g_bc + (1 - g_bc) r_c) P_{c,p} + r_{delta,p} (W_p - sum_c P_{c,p}),

with one source ``r`` per component and one per parameter's residual, shared by every input (VPD's
evaluation: sharing stops the adversary exploiting per-input noise). From sources at 0.5, STEPS
sign-gradient ascent steps of size STEP_SIZE (n x alpha = 2, as VPD) maximise the reconstruction error,
each followed by a clamp to [0, 1]. VPD starts from random sources; the middle of the range keeps the
metric independent of the components' order (and free of a seed). The metric is the final error: the mean
squared output change over the evaluation inputs, divided by the mean square of the clean output (0: no
mask the adversary can find moves the output; about 1: as far as the output is from 0). N/A where the
attributions are not importances (APD's gradient attributions, the bases' activations) or the components
do not claim faithfulness.
"""

from __future__ import annotations

import math

import torch
from torch.func import functional_call, vmap

from benchmark.scoring import ScoringContext, metric

STEPS = 20
STEP_SIZE = 0.1
START = 0.5  # every source's starting value
MAX_ELEMENTS = 2**22  # per-input weight entries held at once (float64), per chunk of inputs


def adversarial_error(ctx: ScoringContext, steps: int = STEPS, step_size: float = STEP_SIZE) -> float | None:
    """The fresh-PGD reconstruction error of ``ctx``'s decomposition (module docstring); None where N/A."""
    dec = ctx.decomposition
    if not dec.importances or not dec.faithful:
        return None
    g = ctx.attributions
    if g is None:
        return None
    g = (g * dec.importance_scale).clamp(0.0, 1.0)  # [B, C]
    model = ctx.toy.model
    params = {n: p.detach().to(torch.float64) for n, p in model.named_parameters()}
    buffers = {n: b.to(torch.float64) if b.is_floating_point() else b for n, b in model.named_buffers()}
    comps = ctx.components  # [C, D]
    resid = ctx.weights - comps.sum(dim=0)  # [D]
    sizes = [math.prod(ctx.shapes[n]) for n in ctx.names]
    x = ctx.eval_inputs.to(torch.float64)

    blocks = _blocks(g, comps, sizes)
    resid_parts = resid.split(sizes)

    def run(parts: tuple[torch.Tensor, ...], xb: torch.Tensor) -> torch.Tensor:
        moved = dict(params)
        for n, part in zip(ctx.names, parts, strict=True):
            moved[n] = part.reshape(ctx.shapes[n])
        return functional_call(model, (moved, buffers), (xb.unsqueeze(0),)).squeeze(0)

    with torch.no_grad():
        clean = functional_call(model, (params, buffers), (x,))
    scale = float(clean.pow(2).mean())
    if not math.isfinite(scale) or scale == 0.0:
        return None
    chunk = max(1, MAX_ELEMENTS // max(1, comps.shape[1]))
    B = x.shape[0]

    def error(r: torch.Tensor, grad: bool) -> float:
        """Mean squared output change at sources ``r`` (``C + P``); accumulates r.grad where ``grad``."""
        total = 0.0
        for lo in range(0, B, chunk):  # each chunk builds its own graph from r: one backward per chunk
            sl = slice(lo, lo + chunk)
            r_c, r_d = r[: comps.shape[0]], r[comps.shape[0] :]
            parts = tuple(  # each parameter's per-input weights [b, D_p], from the components that touch it
                (g_p[sl] + (1 - g_p[sl]) * (r_c if rows is None else r_c[rows])) @ block + r_d[i] * resid_parts[i]
                for i, (rows, g_p, block) in enumerate(blocks)
            )
            out = vmap(run)(parts, x[sl])
            loss = (out - clean[sl]).pow(2).sum() / (clean[sl].numel() / len(out)) / B / scale
            if grad:
                loss.backward()
            total += float(loss.detach())
        return total

    r = torch.full((comps.shape[0] + len(ctx.names),), START, dtype=torch.float64)
    for _ in range(steps):
        r.requires_grad_(True)
        error(r, grad=True)
        with torch.no_grad():
            r = (r + step_size * r.grad.sign()).clamp(0.0, 1.0)
    with torch.no_grad():
        return error(r, grad=False)


def _blocks(g: torch.Tensor, comps: torch.Tensor, sizes: list[int]) -> list[tuple[torch.Tensor | None, ...]]:
    """Per decomposed parameter: (the components with a non-zero entry in it, or None for all; their
    importances ``[B, k]``; their entries in it ``[k, D_p]``). SPD's and VPD's components each live in one
    weight matrix, so the masked sum over components is done per matrix on its own components only (8x
    fewer multiply-adds on the 8-matrix transformer); the products skipped are exact zeros."""
    out = []
    for block in comps.split(sizes, dim=1):
        touches = (block != 0).any(dim=1)
        if bool(touches.all()):
            out.append((None, g, block))
        else:
            rows = torch.nonzero(touches).flatten()
            out.append((rows, g[:, rows], block[rows]))
    return out


@metric(
    "adversarial_error",
    bounds=(0.0, None),
    version="1",
    grouped=False,
    higher_is_better=False,
    ideal=0.0,
    description="Mean squared output change / the clean output's mean square under the worst masks m = g + (1 - g) r "
    "that a fresh PGD search (20 sign steps of 0.1, sources shared over inputs, residual maskable) finds (VPD's "
    "evaluation). Only where the attributions are causal importances in [0, 1] and the components claim "
    "faithfulness, else N/A.",
)
def adversarial(ctx: ScoringContext) -> float | None:
    return adversarial_error(ctx)
