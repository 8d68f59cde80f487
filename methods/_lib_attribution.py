"""APD-style gradient attribution for any parameter component (``rib_lib_pca.md`` 5.2; APD arXiv:2501.14926).

A_c(x) = sqrt(mean_o (sum_theta dy_o/dtheta * P_c,theta)^2): the size of the first-order change of the
model's output when the weights move along component c. One forward-mode JVP per component, vectorised
over samples (torch.func), components batched with vmap.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

from benchmark.decomposition import Decomposition


def gradient_attributions(model: nn.Module, decomposition: Decomposition, inputs: Tensor, names: tuple[str, ...],
                          chunk: int = 16) -> Tensor:
    """``[batch, C]`` float32 attributions of every component of ``decomposition`` on ``inputs``."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    if not params:
        raise ValueError("the model has no parameters to attribute to")
    inputs = inputs.to(next(iter(params.values())).device)
    primals = {n: params[n] for n in names}
    dense = [decomposition.dense(i) for i in range(len(decomposition))]

    def out(sub: dict[str, Tensor]) -> Tensor:
        y = functional_call(model, {**params, **sub}, (inputs,))
        return y.reshape(y.shape[0], -1)

    def one(tangent: dict[str, Tensor]) -> Tensor:
        return jvp(out, (primals,), (tangent,))[1]

    cols = []
    for start in range(0, len(dense), chunk):
        part = dense[start:start + chunk]
        stacked = {n: torch.stack([c.get(n, torch.zeros_like(primals[n])).to(primals[n]) for c in part])
                   for n in names}
        dy = vmap(one)(stacked)  # [k, batch, out]
        cols.append(dy.pow(2).mean(-1).sqrt().T.cpu())
    return torch.cat(cols, dim=1).float()
