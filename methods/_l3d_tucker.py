"""Per-tensor Tucker parameterisation of L3D's subnetworks (Chrisman, Bushnaq, Sharkey 2025, arXiv:2504.00194,
App. B.1; ``docs/reference/l3d.md`` 1.4).

Subnetwork k restricted to a parameter tensor t of shape (d_1..d_n) is
``v_{k,t} = G_t[.., k] x_1 U_t^(1)[:, :, k] ... x_n U_t^(n)[:, :, k]`` with core ``G_t: (r_1..r_n, n_v)`` and
factors ``U_t^(m): (r_m, d_m, n_v)``. The encoder V^in and the decoder V^out are two such banks, not tied.
"""

from __future__ import annotations

import math
import string

import torch
from torch import Tensor, nn


def _einsum_dense(n_modes: int) -> str:
    """Einsum string expanding a core and its factors into ``(n_v, d_1..d_n)``."""
    r = string.ascii_lowercase[:n_modes]
    d = string.ascii_uppercase[:n_modes]
    ops = [r + "z"] + [f"{r[m]}{d[m]}z" for m in range(n_modes)]
    return ",".join(ops) + "->z" + d


class TuckerBank(nn.Module):
    """``n_v`` subnetworks, each a Tucker tensor per parameter; ``flat()`` gives them as ``[n_v, n_w]``."""

    def __init__(
        self,
        shapes: dict[str, tuple[int, ...]],
        ranks: dict[str, tuple[int, ...]],
        n_v: int,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.names = list(shapes)
        self.shapes = {n: tuple(s) for n, s in shapes.items()}
        self.n_v = n_v
        self.cores = nn.ParameterList()
        self.factors = nn.ModuleList()
        for n in self.names:
            dims = self.shapes[n] or (1,)
            rk = tuple(ranks[n])
            if len(rk) != len(dims):
                raise ValueError(f"rank {rk} for parameter {n!r} must have one entry per mode of shape {dims}")
            if any(r < 1 for r in rk):
                raise ValueError(f"ranks must be >= 1, got {rk} for {n!r}")
            rk = tuple(min(r, d) if len(dims) > 1 else r for r, d in zip(rk, dims, strict=True))
            # paper code: randn / n_v for the core and every factor
            self.cores.append(nn.Parameter(torch.randn(*rk, n_v, generator=generator, dtype=dtype) / n_v))
            self.factors.append(
                nn.ParameterList(
                    nn.Parameter(torch.randn(r, d, n_v, generator=generator, dtype=dtype) / n_v)
                    for r, d in zip(rk, dims, strict=True)
                )
            )
        self._eq = [_einsum_dense(len(self.shapes[n]) or 1) for n in self.names]
        self._parts = [[self.cores[i], *self.factors[i]] for i in range(len(self.names))]  # fast access

    def _apply(self, fn, recurse=True):  # keep the cached lists pointing at the moved parameters
        out = super()._apply(fn, recurse)
        self._parts = [[self.cores[i], *self.factors[i]] for i in range(len(self.names))]
        return out

    def dense(self) -> dict[str, Tensor]:
        """``{param: Tensor[n_v, *shape]}``."""
        return {
            n: torch.einsum(self._eq[i], *self._parts[i]).reshape(self.n_v, *self.shapes[n])
            for i, n in enumerate(self.names)
        }

    def flat(self) -> Tensor:
        """``[n_v, n_w]`` in the order of ``names``."""
        return torch.cat([t.reshape(self.n_v, -1) for t in self.dense().values()], dim=1)

    def tensor_norms(self) -> Tensor:
        """``[n_v, n_tensors]``: Frobenius norm of each subnetwork's part in each tensor."""
        return torch.stack([t.reshape(self.n_v, -1).norm(dim=1) for t in self.dense().values()], dim=1)

    @torch.no_grad()
    def normalise(self, mode: str = "l2") -> None:
        """Rescale every subnetwork to unit norm.

        ``l2`` (paper s2.3): global L2 norm over all tensors is 1. ``code``: the public code's update
        N_k = (sum_t ||v_{k,t}||_F)^(1/2), which converges to sum_t ||v_{k,t}||_F = 1 (docs/reference/l3d.md 1.7).
        As in the code, each of the (n_modes + 1) Tucker parts of a tensor is divided by N_k^(1/(n_modes+1)).
        """
        per = self.tensor_norms()
        if mode == "l2":
            N = per.pow(2).sum(1).sqrt()
        elif mode == "code":
            N = per.sum(1).sqrt()
        else:
            raise ValueError(f"unknown normalisation {mode!r}; use 'l2' or 'code'")
        N = N.clamp_min(1e-12)
        for parts in self._parts:
            s = N.pow(1.0 / len(parts))
            for p in parts:
                p.div_(s)

    def low_rank(self, k: int, name: str) -> tuple[Tensor, Tensor] | None:
        """For a matrix parameter: factors ``(left [d1, r1], right [r1, d2])`` of subnetwork k, else None."""
        i = self.names.index(name)
        if len(self.shapes[name]) != 2:
            return None
        G = self.cores[i][..., k]  # (r1, r2)
        U1, U2 = self.factors[i][0][..., k], self.factors[i][1][..., k]  # (r1, d1), (r2, d2)
        left = U1.T @ G  # (d1, r2)
        return left.detach().clone(), U2.detach().clone()


def n_params(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) if s else 1 for s in shapes.values())
