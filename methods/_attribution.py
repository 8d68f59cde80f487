"""APD-style gradient attribution for any parameter component (``docs/reference/lib_pca.md`` 5.2; APD arXiv:2501.14926).

A_c(x) = sqrt(mean_o (sum_theta dy_o/dtheta * P_c,theta)^2): the size of the first-order change of the
model's output when the weights move along component c. The Jacobian-vector product J P_c is taken with
the double-backward trick (g(v) = J^T v is linear in v, and d<g(v), P_c>/dv = J P_c): reverse mode only,
vectorised over samples, one backward pass per component. Forward-mode AD gives the same numbers
but makes torch script its JIT decompositions on first use in every fresh process.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from benchmark.decomposition import Decomposition


def gradient_attributions(
    model: nn.Module, decomposition: Decomposition, inputs: Tensor, names: tuple[str, ...]
) -> Tensor:
    """``[batch, C]`` float32 attributions of every component of ``decomposition`` on ``inputs``."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    if not params:
        raise ValueError("the model has no parameters to attribute to")
    inputs = inputs.to(next(iter(params.values())).device)
    with torch.enable_grad():
        leaves = {n: params[n].clone().requires_grad_(True) for n in names}
        y = functional_call(model, {**params, **leaves}, (inputs,))
        y = y.reshape(y.shape[0], -1)
        v = torch.zeros_like(y, requires_grad=True)
        grads = torch.autograd.grad(y, list(leaves.values()), grad_outputs=v, create_graph=True, allow_unused=True)
        used = [(n, g) for n, g in zip(leaves, grads, strict=True) if g is not None]
        cols = []
        for i in range(len(decomposition)):
            comp = decomposition.dense(i)
            pairs = [(g, comp[n].to(g)) for n, g in used if n in comp]
            if not pairs:
                cols.append(torch.zeros(y.shape[0], dtype=y.dtype, device=y.device))
                continue
            (jp,) = torch.autograd.grad(
                [g for g, _ in pairs], v, grad_outputs=[p for _, p in pairs], retain_graph=True, allow_unused=True
            )
            jp = torch.zeros_like(y) if jp is None else jp
            cols.append(jp.detach().pow(2).mean(1).sqrt())
    return torch.stack(cols, dim=1).float().cpu()
