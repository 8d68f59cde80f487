"""Learning-rate schedules shared by the APD and SPD ports: a linear warm-up, then constant, linear or
quarter-cosine decay (``spd/utils.py:get_lr_with_warmup`` in the APD and SPD reference code).

The two ports differ in two details, kept here so that both train bit-for-bit as before:

- ``warmup_from_zero`` (APD): the warm-up is ``lr * step / w``, so step 0 trains at 0; otherwise (SPD) it is
  ``lr * (step + 1) / w``, reaching ``lr`` on the last warm-up step.
- ``clamp`` (SPD): the cosine's progress is ``min(t / (n - 1), 1)``, evaluated in that order; without it
  (APD) the angle is ``pi / 2 * t / (n - 1)``. The two agree to the last bit or two (not exactly).

``t`` counts steps after the warm-up and ``n`` is the number of steps after it. Constant and linear
(``1 - t / n``) are the same in both ports.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")


def lr_at(
    step: int,
    steps: int,
    lr: float,
    schedule: str,
    warmup: float = 0.0,
    *,
    warmup_from_zero: bool = True,
    clamp: bool = False,
) -> float:
    """The learning rate at ``step`` (0-based) of ``steps``, with a linear warm-up over ``int(steps * warmup)``
    steps; see the module docstring for ``warmup_from_zero`` and ``clamp``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr_schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    w = int(steps * warmup)
    if step < w:
        return lr * (step if warmup_from_zero else step + 1) / w
    t, n = step - w, steps - w
    if schedule == "constant":
        return lr
    if schedule == "linear":
        return lr * (1 - t / max(n, 1))
    if clamp:
        return lr * math.cos(0.5 * math.pi * min(t / max(n - 1, 1), 1.0))
    return lr if n <= 1 else lr * math.cos(0.5 * math.pi * t / (n - 1))
