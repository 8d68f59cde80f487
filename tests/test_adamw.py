"""methods._adamw.AdamW against torch's AdamW (SPD, SPD main, VPD) and foreach Adam (L3D): the same parameters
bit for bit."""

from __future__ import annotations

import pytest
import torch

from methods._adamw import AdamW


@pytest.mark.parametrize(
    ("torch_opt", "weight_decay"),
    [
        (lambda ps, wd: torch.optim.AdamW(ps, lr=1e-2, weight_decay=wd), 0.0),
        (lambda ps, wd: torch.optim.AdamW(ps, lr=1e-2, weight_decay=wd), 0.1),
        (lambda ps, wd: torch.optim.Adam(ps, lr=1e-2, foreach=True), 0.0),
    ],
    ids=["adamw", "adamw-decay", "adam-foreach"],
)
def test_adamw_matches_torch_bit_for_bit(torch_opt, weight_decay: float) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 20), (20, 2), (2, 20, 16), (2, 20), (37,)]
    ours = [torch.randn(s, generator=g).requires_grad_() for s in shapes]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a = AdamW(ours, lr=1e-2, weight_decay=weight_decay)
    b = torch_opt(theirs, weight_decay)
    for step in range(60):
        lr = 2e-2 * (1 - step / 60)  # a changing rate, as the schedules set it
        a.lr = lr
        for group in b.param_groups:
            group["lr"] = lr
        a.zero_grad()
        b.zero_grad(set_to_none=True)
        for i, (p, q) in enumerate(zip(ours, theirs, strict=True)):
            if i == 3 and step % 7 == 0:  # no gradient this step: skipped, its step count kept
                continue
            grad = torch.randn(p.shape, generator=g) * 10.0 ** (i - 2)
            p.grad, q.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(ours[0], torch.randn(shapes[0], generator=torch.Generator().manual_seed(0)))
