"""The APD/SPD papers' own TMS metrics, written out independently of ``benchmark.metrics`` so that the
reproduction tests compare against the papers' definition itself (``docs/reference/apd_spd.md`` 2.1)."""

from __future__ import annotations

import torch


def paper_mmcs_ml2r(W: torch.Tensor, P: torch.Tensor) -> tuple[float, float]:
    """Signed, column-wise MMCS and ML2R on the first weight matrix: ``W [m1, m2]``, ``P [C, m1, m2]``."""
    W, P = W.double(), P.double()
    cos = torch.einsum("cij,ij->cj", P, W) / (P.norm(dim=1) * W.norm(dim=0)).clamp_min(1e-12)
    best = cos.argmax(0)
    ratio = P[best, :, torch.arange(W.shape[1])].norm(dim=1) / W.norm(dim=0)
    return float(cos.max(0).values.mean()), float(ratio.mean())
