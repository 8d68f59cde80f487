"""Several APD runs of one network trained as one batched model (seeds together).

On a toy model an APD step (arXiv:2501.14926; :meth:`methods.apd.APD._losses`) is many small operations: the
target's output, C Jacobian-vector products for the attributions, the batch top-k, the per-input forward with
masked weights. Each run keeps what it has alone (:class:`methods.apd._Run`: factors, optimizer, data
generator, log); a step runs the target once on every run's batch laid end to end, the attributions of all runs
as one ``vmap`` over runs, and the per-input forward once on all rows; the top-k, the masked weights and every
loss term stay per run. Each gives the same decomposition, bit for bit, as alone (``tests/test_seed_groups.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.func import vmap

from methods import _apd_core as core

if TYPE_CHECKING:
    from benchmark.decomposition import Decomposition
    from benchmark.method import Budget
    from benchmark.toy import Target
    from methods.apd import APD, _Run


def group_losses(runs: Sequence[_Run], xs: Sequence[Tensor]) -> list[dict[str, Tensor]]:
    """:meth:`APD._losses` of every run at once (attributions at the target's weights)."""
    from methods.apd import _act_recon

    first = runs[0]
    hp, theta, n = first.hp, first.theta, len(runs)
    Ps = [core.component_weights(r.L, r.R) for r in runs]
    x = torch.cat(list(xs))
    with torch.no_grad():
        target_out = first.f_attr(theta, x)
        Pd = {k: torch.stack([P[k].detach() for P in Ps]) for k in theta}

        def attributions(P: dict[str, Tensor], xr: Tensor) -> Tensor:
            return core.gradient_attributions(first.f_attr, theta, P, xr, hp["attribution_chunk"])

        attr = vmap(attributions)(Pd, torch.stack(list(xs)))  # [N, batch, C]
        masks = [core.topk_mask(a, hp["topk"], hp["batch_topk"]) for a in attr]
    W_b = [core.masked_weights(P, m) for P, m in zip(Ps, masks, strict=True)]
    out = core.per_input_forward(first.f, {k: torch.cat([w[k] for w in W_b]) for k in theta}, x)
    b = xs[0].shape[0]
    terms = []
    for j, r in enumerate(runs):
        rows = slice(j * b, (j + 1) * b)
        losses = {
            "faithfulness": core.faithfulness_loss(theta, Ps[j], first.n_params),
            "minimality": ((out[rows] - target_out[rows]) ** 2).mean(),
            "simplicity": core.schatten_loss(r.L, r.R, masks[j], hp["schatten_p"], first.n_params),
        }
        if hp["act_recon_coeff"]:
            losses["act_recon"] = _act_recon(first.target, theta, W_b[j], xs[j], first.sites, hp["act_recon_relu"])
        terms.append(losses)
    assert len(terms) == n
    return terms


def train_together(
    method: APD, target: Target, budget: Budget, seeds: Sequence[int], device: str, hp: dict[str, Any]
) -> list[Decomposition | Exception]:
    """:meth:`APD.decompose` for every seed at once. A run whose loss becomes non-finite ends with the error it
    raises alone (the others go on unchanged); all stop together where the budget's time says so."""
    from methods.apd import _Run

    out_of_time = budget.timer()
    runs = [_Run(target, budget, seed, device, hp) for seed in seeds]
    result: list[Decomposition | Exception | None] = [None] * len(runs)
    live = list(range(len(runs)))
    steps = runs[0].steps
    step = 0
    for step in range(steps):
        group = [runs[j] for j in live]
        xs = [r.before_step(step) for r in group]
        terms = group_losses(group, xs)
        totals = [method._total(t, hp) for t in terms]
        ok = []
        for j, r, t, loss in zip(live, group, terms, totals, strict=True):
            try:
                r.check(step, t, loss)
                ok.append((j, r, t, loss))
            except FloatingPointError as exc:
                result[j] = exc
        for _, r, _, _ in ok:
            r.opt.zero_grad()
        if ok:
            sum(loss for _, _, _, loss in ok).backward()  # type: ignore[union-attr]
        for _, r, t, loss in ok:
            r.update(step, t, loss)
        live = [j for j, _, _, _ in ok]
        if not live:
            break
        if step < steps - 1 and out_of_time():
            for j in live:
                runs[j].stopped_early = True
            break
    for j in live:
        try:
            result[j] = runs[j].finish(step + 1)
        except Exception as exc:  # noqa: BLE001 - this seed's error row; the others stand
            result[j] = exc
    return [r if r is not None else RuntimeError("apd: run ended without a result") for r in result]
