"""Per-sample gradients of L3D's divergence to a reference output (arXiv:2504.00194 s2.2;
docs/reference/l3d.md 1.2-1.3).

For regression toys the divergence is D_i = ||f(x_i; W) - y_r||^2 / (2 n_o) with the reference output y_r held
fixed (the code's ``MSEVectorLoss``), so g_i = J_i^T (f(x_i) - y_r) / n_o with J_i = df(x_i)/dW at W_0.
Everything here is vectorised over samples with ``torch.func`` (vmap of grad / jacrev / jvp).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, jvp, vmap

Params = dict[str, Tensor]


def single_output_fn(model: nn.Module, names: tuple[str, ...]) -> Callable[[Params, Tensor], Tensor]:
    """``f(params, x) -> flat output`` for one unbatched input, the other parameters held at their values."""
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in names}
    fixed.update(dict(model.named_buffers()))

    def f(params: Params, x: Tensor) -> Tensor:
        return functional_call(model, {**fixed, **params}, (x.unsqueeze(0),)).reshape(-1)

    return f


def divergence(f: Callable[[Params, Tensor], Tensor]) -> Callable[[Params, Tensor, Tensor], Tensor]:
    """D(params, x, y_ref) = ||f(x) - y_ref||^2 / (2 n_o)."""

    def D(params: Params, x: Tensor, y_ref: Tensor) -> Tensor:
        out = f(params, x)
        return (out - y_ref).pow(2).sum() / (2 * out.numel())

    return D


def per_sample_grads(model: nn.Module, params: Params, x: Tensor, y_ref: Tensor) -> Params:
    """``{name: [B, *shape]}``: grad_W D(f(x_i), y_ref_i) for every i, with one vmap (no loop over samples)."""
    f = single_output_fn(model, tuple(params))
    return vmap(grad(divergence(f)), in_dims=(None, 0, 0))(params, x, y_ref)


def per_sample_grads_loop(model: nn.Module, params: Params, x: Tensor, y_ref: Tensor) -> Params:
    """The same as :func:`per_sample_grads` with a Python loop over samples (reference for tests/benchmarks)."""
    f = single_output_fn(model, tuple(params))
    D = divergence(f)
    rows = []
    for i in range(x.shape[0]):
        p = {n: t.detach().clone().requires_grad_(True) for n, t in params.items()}
        with torch.enable_grad():
            gs = torch.autograd.grad(D(p, x[i], y_ref[i]), list(p.values()))
        rows.append(gs)
    return {n: torch.stack([r[j] for r in rows]) for j, n in enumerate(params)}


def outputs(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    """``[B, n_o]`` flat outputs at the given parameters."""
    f = single_output_fn(model, tuple(params))
    return vmap(f, in_dims=(None, 0))(params, x)


def jacobians(model: nn.Module, params: Params, x: Tensor, chunk: int = 256) -> Tensor:
    """``[B, n_o, n_w]``: per-sample Jacobians of the flat output w.r.t. the flat parameters (vmap of jacrev)."""
    f = single_output_fn(model, tuple(params))
    jf = vmap(jacrev(f), in_dims=(None, 0))
    parts = []
    for s in range(0, x.shape[0], chunk):  # chunks bound memory only; each chunk is one vectorised call
        J = jf(params, x[s : s + chunk])
        parts.append(torch.cat([J[n].reshape(J[n].shape[0], J[n].shape[1], -1) for n in params], dim=2))
    return torch.cat(parts)


def directional(model: nn.Module, params: Params, x: Tensor, directions: Params) -> Tensor:
    """``[K, B, n_o]``: d/d delta f(x; W_0 + delta v_k) at delta = 0 for each of K directions (vmap of jvp)."""
    names = tuple(params)

    def f_batch(p: Params) -> Tensor:
        fixed = {n: q.detach() for n, q in model.named_parameters() if n not in names}
        return functional_call(model, {**fixed, **dict(model.named_buffers()), **p}, (x,)).reshape(x.shape[0], -1)

    def one(v: Params) -> Tensor:
        return jvp(f_batch, (params,), (v,))[1]

    return vmap(one)(directions)


def flatten_grads(g: Params, names: tuple[str, ...]) -> Tensor:
    return torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], dim=1)
