"""Intervention specificity: L3D's perturbation test as a ratio (Chrisman et al. 2025, arXiv:2504.00194).

L3D shows qualitatively that perturbing the weights along a subnetwork, W + delta v_k, changes the outputs
of the inputs that use that subnetwork and little else (``docs/reference/l3d.md`` section 3). As a
number: for each mechanism m that is not always on, take its matched unit u (unit vector u_hat), perturb
the decomposed weights by +-delta u_hat and measure the output change ||f(x; W +- delta u_hat) - f(x; W)||
averaged over both signs (so the score does not depend on u's sign). The mechanism's ratio is the mean
change on inputs that use m over the mean change on inputs that do not. The metric is the geometric mean
of the ratios over those mechanisms, each clipped to [1e-6, 1e6]; a mechanism without a matched unit
counts as ratio 1 (no specificity). delta = 0.1 ||W||_F / sqrt(M), a small step on the scale of one
mechanism. The oracle's value is the reference for each toy model (it is not 'infinite': changing a
mechanism's weights also moves outputs it shares with others).

The outputs are computed in float64 (version 3): a change on inputs that do not use the mechanism can be
tiny, and in float32 the difference ``f(x; W + d) - f(x; W)`` is then mostly rounding, which differs from one
CPU's kernels to another's by up to 1% of the ratio, more than ``pdbench validate`` accepts. In float64 the
rounding is about 1e-15 of the output, still the whole of some changes on the compiled induction toy (its
softmax leaks e^-20): a unit whose moves change nothing measurable had a ratio of rounding over rounding,
which moved by up to 1.2% between AVX2 and AVX512 kernels. Version 4 counts a mean change below ``FLOOR``
(1e-9) of the mean output norm as that floor: such a mechanism's ratio is 1, and a mean just above it moves
by at most 1e-5 of itself between kernels.
"""

from __future__ import annotations

import math

import torch
from torch.func import functional_call, vmap

from benchmark.scoring import ScoringContext, metric

SCALE = 0.1
PER_SIDE = 32  # inputs using the mechanism, and inputs not using it, per mechanism
MIN_SIDE = 2
CLIP = 1e6
#: A mean output change below this share of the mean output norm counts as this share: float64 rounding of
#: ``f(x; W + d) - f(x; W)`` is about 1e-15 of the output and differs between CPUs' kernels (AVX2, AVX512)
FLOOR = 1e-9
MAX_ELEMENTS = 2**24  # outputs held at once, per vmap chunk


def _output_changes(ctx: ScoringContext, directions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[K, 3, B]``: ||f(x_k; W + s d_k) - f(x_k; W)|| for s = +1 and -1, then ||f(x_k; W)||, for each flattened
    weight change d_k (``[K, D]``) and its own inputs x_k (``[K, B, ...]``); the unmoved outputs are computed
    once for both signs."""
    model = ctx.toy.model
    params = {n: _wide(p.detach()) for n, p in model.named_parameters()}
    buffers = {n: _wide(b) for n, b in model.named_buffers()}
    directions, x = directions.to(torch.float64), _wide(x)
    deltas, offset = {}, 0
    for n in ctx.names:
        numel = math.prod(ctx.shapes[n])
        p = params[n]
        deltas[n] = directions[:, offset : offset + numel].reshape(-1, *p.shape)
        offset += numel

    def run(delta: dict[str, torch.Tensor], xk: torch.Tensor) -> torch.Tensor:
        base = functional_call(model, (params, buffers), (xk,))
        changes = []
        for sign in (1.0, -1.0):
            moved = {**params, **{n: params[n] + sign * d for n, d in delta.items()}}
            out = functional_call(model, (moved, buffers), (xk,))
            changes.append((out - base).flatten(1).norm(dim=1))
        return torch.stack([*changes, base.flatten(1).norm(dim=1)])

    with torch.no_grad():
        width = functional_call(model, (params, buffers), (x[0],)).numel()
        chunk = max(1, MAX_ELEMENTS // max(1, 3 * width))
        return vmap(run, chunk_size=chunk)(deltas, x)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Floating tensors in float64 (token ids and masks as they are)."""
    return t.to(torch.float64) if t.is_floating_point() else t


@metric(
    "intervention_specificity",
    bounds=(0.0, None),
    version="4",  # 3: outputs in float64; 4: mean changes below FLOOR of the output count as FLOOR
    higher_is_better=True,
    description="Geometric mean over not-always-on mechanisms of (mean output change on inputs using the mechanism) "
    "/ (mean change on other inputs) when the weights move +-delta along the matched unit (L3D's perturbation test).",
)
def intervention_specificity(ctx: ScoringContext) -> float | None:
    truth = ctx.true_active
    sparse = torch.tensor([not mech.always_on for mech in ctx.mechanisms], dtype=torch.bool)
    n_sparse_active = truth[:, sparse].sum(dim=1)
    sides: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for m, mech in enumerate(ctx.mechanisms):
        on = torch.nonzero(truth[:, m]).flatten()[:PER_SIDE]
        off = torch.nonzero(~truth[:, m] & (n_sparse_active > 0)).flatten()[:PER_SIDE]  # uses another one
        if not mech.always_on and len(on) >= MIN_SIDE and len(off) >= MIN_SIDE:
            sides[m] = (on, off)
    if not sides:
        return None
    matched = dict(ctx.matching)
    pairs = [(m, matched[m]) for m in sides if m in matched]
    log_ratios = [0.0] * (len(sides) - len(pairs))  # unmatched: ratio 1
    if pairs:
        units = torch.tensor([u for _, u in pairs])
        vecs = ctx.unit_vectors[units]
        step = SCALE * float(ctx.weights.norm()) / math.sqrt(len(ctx.mechanisms))
        dirs = step * vecs / vecs.norm(dim=1, keepdim=True)
        # each mechanism's inputs: up to PER_SIDE using it, then up to PER_SIDE not (padded, masked out)
        rows = torch.zeros(len(pairs), 2 * PER_SIDE, dtype=torch.long)
        valid = torch.zeros(len(pairs), 2 * PER_SIDE, dtype=torch.bool)
        for i, (m, _) in enumerate(pairs):
            on, off = sides[m]
            rows[i, : len(on)], rows[i, PER_SIDE : PER_SIDE + len(off)] = on, off
            valid[i, : len(on)], valid[i, PER_SIDE : PER_SIDE + len(off)] = True, True
        x = ctx.eval_inputs[rows]
        measured = _output_changes(ctx, dirs, x)
        change = 0.5 * (measured[:, 0] + measured[:, 1]) * valid  # [P, 2 * PER_SIDE]
        mean_on = change[:, :PER_SIDE].sum(dim=1) / valid[:, :PER_SIDE].sum(dim=1)
        mean_off = change[:, PER_SIDE:].sum(dim=1) / valid[:, PER_SIDE:].sum(dim=1)
        floor = FLOOR * (measured[:, 2] * valid).sum(dim=1) / valid.sum(dim=1)  # [P]: FLOOR x mean ||f(x; W)||
        for a, b, f in zip(mean_on.tolist(), mean_off.tolist(), floor.tolist(), strict=True):
            if f > 0.0:
                ratio = max(a, f) / max(b, f)
            else:  # every output is zero: no scale for a floor
                ratio = 1.0 if a == b == 0.0 else (CLIP if b == 0.0 else a / b)
            log_ratios.append(math.log(min(CLIP, max(1.0 / CLIP, ratio))))
    return math.exp(sum(log_ratios) / len(log_ratios))
