"""The pieces of Attribution-based Parameter Decomposition (APD), as pure functions.

Braun, Bushnaq, Heimersheim, Mendel, Sharkey 2025, "Interpretability in Parameter Space: Minimizing
Mechanistic Description Length with Attribution-based Parameter Decomposition", arXiv:2501.14926,
section 2 (method) and appendix (losses); ``docs/reference/apd_spd.md`` section 3.1.

Every component c spans every decomposed matrix n: ``P[n][c] = L[n][c] @ R[n][c]`` with
``L [C, rows, m]`` and ``R [C, m, cols]`` (full rank when m = min(rows, cols)). The network is run
functionally (``torch.func.functional_call``) so any ``nn.Module`` whose decomposed parameters are
matrices works; per-input weights ``sum_c s_c(x) P_c`` go through ``torch.func.vmap``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

from methods import _schedules as schedules

Params = dict[str, Tensor]


class _Fast(nn.Module):
    """Runs the wrapped model's ``forward_fast`` (its output computed another way) under ``functional_call``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, x: Tensor) -> Tensor:
        return self.m.forward_fast(x)


class Forward:
    """``f(params, x)``: the model's output with the decomposed parameters replaced by ``params``.

    ``vectors`` holds the model's other 1-D floating tensors (biases, gains) by name. The attributions give
    them a zero tangent: an add of a dual tensor and a tensor without a tangent makes torch's forward-mode AD
    build a zero tensor and run its add through a Python decomposition (about 0.2 ms per add on a CPU: a tenth
    of an APD step on TMS 5-2), while a real zero vector costs one cheap add. Same numbers, bit for bit (a
    zero tangent adds exact zeros).
    """

    def __init__(self, module: nn.Module, fixed: Params, prefix: str, vectors: Params):
        self.module, self.fixed, self.prefix, self.vectors = module, fixed, prefix, vectors

    def __call__(self, params: Params, x: Tensor) -> Tensor:
        p = self.prefix
        out = functional_call(self.module, {**self.fixed, **{p + k: v for k, v in params.items()}}, (x,))
        if not isinstance(out, Tensor):
            raise TypeError(f"APD needs a model whose forward returns one tensor, got {type(out).__name__}")
        return out


def make_forward(model: nn.Module, names: tuple[str, ...], fast: bool = False) -> Forward:
    """The model as a :class:`Forward` of its decomposed parameters.

    The other parameters and buffers (a bias, a frozen embedding) keep their trained values. With
    ``fast=True`` and a model that has a ``forward_fast`` (the same function with products by fixed
    matrices folded together, e.g. the residual MLP's embedding), that method is run instead: for shared
    weights, as in the attributions, it is much cheaper; with per-input weights it is not, so the
    per-input forward keeps the plain one.
    """
    fixed = {k: v.detach() for k, v in model.named_parameters() if k not in names}
    fixed.update({k: v.detach() for k, v in model.named_buffers()})
    vectors = {k: v for k, v in fixed.items() if v.dim() == 1 and v.is_floating_point()}
    module, prefix = (_Fast(model), "m.") if fast and hasattr(model, "forward_fast") else (model, "")
    return Forward(module, {prefix + k: v for k, v in fixed.items()}, prefix, vectors)


def per_input_forward(f: Forward, weights: Params, x: Tensor) -> Tensor:
    """Run ``f`` with a different weight per input: ``weights[n]`` is ``[batch, *shape]``."""

    def one(w: Params, xi: Tensor) -> Tensor:
        return f(w, xi.unsqueeze(0)).squeeze(0)

    return vmap(one)(weights, x)


def init_factors(
    shapes: dict[str, torch.Size],
    C: int,
    m: int | None,
    init: str,
    scale: float,
    generator: torch.Generator,
    instances: int | None = None,
) -> tuple[Params, Params]:
    """``L[n] [C, rows, m_n]`` and ``R[n] [C, m_n, cols]``, initialised like the reference code.

    ``xavier_normal`` and ``kaiming_uniform`` use torch's fan convention, as ``spd/module_utils.py:init_param_``
    does. By default the fans are those of our 3-d factor tensors. With ``instances`` they are those of the
    reference's 4-d ``[n_instances, C, a, b]`` tensors (fan_in = C*a*b, fan_out = n_instances*a*b), so the
    reference's init is reproduced exactly rather than through a rescaled ``scale``.
    """
    L, R = {}, {}
    for n, shape in shapes.items():
        if len(shape) != 2:
            raise ValueError(f"APD decomposes matrices; parameter {n!r} has shape {tuple(shape)}")
        rows, cols = shape
        mn = min(rows, cols) if m is None else m
        if mn < 1:
            raise ValueError(f"APD rank m must be >= 1, got {mn}")
        L[n] = _init(torch.empty(C, rows, mn), init, scale, generator, instances)
        R[n] = _init(torch.empty(C, mn, cols), init, scale, generator, instances)
    return L, R


def _init(t: Tensor, init: str, scale: float, generator: torch.Generator, instances: int | None) -> Tensor:
    if instances is None:
        receptive = math.prod(t.shape[2:])
        fan_in, fan_out = t.shape[1] * receptive, t.shape[0] * receptive
    else:  # the reference's [n_instances, C, a, b]: torch counts C as the input fan, a*b as the receptive field
        receptive = math.prod(t.shape[1:])
        fan_in, fan_out = t.shape[0] * receptive, instances * receptive
    if init == "xavier_normal":
        std = scale * math.sqrt(2.0 / (fan_in + fan_out))
        return torch.randn(t.shape, generator=generator) * std
    if init == "kaiming_uniform":
        bound = math.sqrt(6.0 / fan_in)  # gain sqrt(2) (ReLU) times sqrt(3 / fan_in)
        return (torch.rand(t.shape, generator=generator) * 2 - 1) * bound * scale
    raise ValueError(f"unknown APD init {init!r}; known: xavier_normal, kaiming_uniform")


def component_weights(L: Params, R: Params) -> Params:
    """``P[n] [C, rows, cols]``: every component's matrix in every decomposed parameter."""
    return {n: L[n] @ R[n] for n in L}


def gradient_attributions(f: Forward, theta: Params, P: Params, x: Tensor, chunk: int | None = None) -> Tensor:
    """``[batch, C]``: sum over outputs o of (d f_o / d theta . P_c)^2 (APD eq. for A_c, no sqrt, no 1/d).

    The directional derivative of every output along component c is one Jacobian-vector product, so all
    outputs come at once (forward mode) and ``vmap`` runs all components together: no backward pass per
    output as in the reference code (``spd/utils.py:calc_grad_attributions``), same numbers.
    """
    return _attributions(f, theta, P, x, chunk, output=False)[0]


def attributions_and_output(
    f: Forward, theta: Params, P: Params, x: Tensor, chunk: int | None = None
) -> tuple[Tensor, Tensor]:
    """:func:`gradient_attributions` and ``f(theta, x)``, the forward pass the JVPs run anyway (the same bits
    as calling ``f``: ``tests/test_apd.py``), so that a training step need not run it again."""
    attr, out = _attributions(f, theta, P, x, chunk, output=True)
    assert out is not None
    return attr, out


def _attributions(
    f: Forward, theta: Params, P: Params, x: Tensor, chunk: int | None, output: bool
) -> tuple[Tensor, Tensor | None]:
    """The attributions and, with ``output``, ``f(theta, x)``: unasked, the output is not returned, as ``vmap``
    over chunks would copy it once per component."""
    zeros = {k: torch.zeros_like(v) for k, v in f.vectors.items()}

    def along(tangent: Params) -> tuple[Tensor, ...]:
        out, J = jvp(lambda th, vec: f({**vec, **th}, x), (theta, f.vectors), (tangent, zeros))
        return (J, out) if output else (J,)

    res = vmap(along, chunk_size=chunk)(P)  # [C, batch, *out] each; the output is the same for every c
    return res[0].pow(2).flatten(2).sum(-1).T, res[1][0] if output else None


def topk_mask(attr: Tensor, topk: float, batch_topk: bool = True) -> Tensor:
    """Boolean ``[batch, C]``: the ``int(topk * batch)`` largest attributions over the whole batch.

    With ``batch_topk=False``, the ``int(topk)`` largest per input (``spd/utils.py:calc_topk_mask``).
    """
    b, C = attr.shape
    mask = torch.zeros(b * C, dtype=torch.bool, device=attr.device)
    if batch_topk:
        k = min(int(topk * b), b * C)
        if k > 0:
            mask[attr.reshape(-1).topk(k).indices] = True
        return mask.reshape(b, C)
    k = min(int(topk), C)
    out = torch.zeros(b, C, dtype=torch.bool, device=attr.device)
    if k > 0:
        out.scatter_(1, attr.topk(k, dim=1).indices, True)
    return out


def masked_weights(P: Params, mask: Tensor) -> Params:
    """Per input, the sum of its active components: ``[batch, *shape]`` = sum_c mask[b, c] P_c.

    A sparse ``[batch, C]`` 0/1 matrix times the flattened components: only the active (input, component)
    pairs are added (batch top-k keeps about ``topk`` per input), so the cost is ``topk * batch * N``
    rather than ``C * batch * N``, and the backward pass is the transposed sparse product (about 10x
    faster on a CPU than gathering ``P[c]`` per pair and scattering the gradient back).
    """
    b, C = mask.shape
    out = {}
    for n, p in P.items():
        M = mask.to(p.dtype).to_sparse()
        out[n] = torch.sparse.mm(M, p.reshape(C, -1)).reshape(b, *p.shape[1:])
    return out


def faithfulness_loss(theta: Params, P: Params, n_params: int) -> Tensor:
    """sum over matrices of ||theta* - sum_c P_c||_F^2 / N (APD's faithfulness loss)."""
    return sum(((theta[n] - P[n].sum(0)) ** 2).sum() for n in P) / n_params


def schatten_loss(L: Params, R: Params, mask: Tensor, p: float, n_params: int) -> Tensor:
    """APD simplicity loss: sum_b sum_c s_c(x_b) sum_n sum_k (|L_{:,k}|^2 |R_{k,:}|^2 + 1e-16)^(p/2) / N / batch.

    The factorised Schatten-p proxy of ``spd/run_spd.py:calc_schatten_loss``; only the count of inputs
    on which each component is active matters, so the batch dimension is summed first.
    """
    counts = mask.to(next(iter(L.values())).dtype).sum(0)  # [C]
    total = torch.zeros((), device=counts.device)
    for n in L:
        s = (L[n] ** 2).sum(1) * (R[n] ** 2).sum(2)  # [C, m]
        total = total + (counts[:, None] * (s + 1e-16) ** (0.5 * p)).sum()
    return total / n_params / mask.shape[0]


def lr_at(step: int, steps: int, lr: float, schedule: str, warmup_pct: float) -> float:
    """Learning rate with linear warm-up (from 0) then a schedule, as ``spd/utils.py:get_lr_with_warmup``
    (:func:`methods._schedules.lr_at`)."""
    return schedules.lr_at(step, steps, lr, schedule, warmup_pct, warmup_from_zero=True, clamp=False)


class Adam:
    """Adam without weight decay (the reference's ``AdamW(weight_decay=0)``), in a few fused tensor ops.

    Written out because ``torch.optim`` imports ``torch._dynamo`` on first use (seconds per process).
    """

    def __init__(self, params: list[Tensor], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.betas, self.eps, self.t = params, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-lr / c1)
