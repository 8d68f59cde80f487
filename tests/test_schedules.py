"""The one learning-rate schedule implementation (``methods/_schedules.py``) gives, bit for bit, the values of
the two formulas it replaced (copied below from ``methods/_apd_core.py`` and ``methods/_spd_core.py``)."""

from __future__ import annotations

import math

import pytest

from methods import _apd_core
from methods._schedules import lr_at
from methods._spd_core import SPDConfig


def old_apd_lr_at(step: int, steps: int, lr: float, schedule: str, warmup_pct: float) -> float:
    warm = int(steps * warmup_pct)
    if step < warm:
        return lr * step / warm
    s, n = step - warm, steps - warm
    if schedule == "constant":
        return lr
    if schedule == "linear":
        return lr * (1 - s / n)
    if schedule == "cosine":
        return lr if n <= 1 else lr * math.cos(0.5 * math.pi * s / (n - 1))
    raise ValueError(f"unknown lr_schedule {schedule!r}; known: constant, linear, cosine")


def old_spd_lr_at(cfg: SPDConfig, step: int) -> float:
    T = cfg.steps
    w = int(cfg.warmup * T)
    if step < w:
        return cfg.lr * (step + 1) / w
    t, span = step - w, max(T - w - 1, 1)
    if cfg.schedule == "cosine":
        return cfg.lr * math.cos(0.5 * math.pi * min(t / span, 1.0))
    if cfg.schedule == "linear":
        return cfg.lr * (1 - t / (span + 1))
    return cfg.lr


CASES = [
    (steps, lr, warmup)
    for steps in (1, 2, 3, 10, 100, 997, 20_000, 40_000)
    for lr in (1.0, 3e-3, 1e-3)
    for warmup in (0.0, 0.01, 0.05, 0.1, 0.5)
]


def _steps(steps: int) -> list[int]:
    picks = {0, 1, 2, steps // 3, steps // 2, steps - 2, steps - 1} | set(range(0, steps, max(1, steps // 97)))
    return sorted(s for s in picks if 0 <= s < steps)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_apd_schedule_is_bit_identical_to_the_old_formula(schedule):
    for steps, lr, warmup in CASES:
        for step in _steps(steps):
            old = old_apd_lr_at(step, steps, lr, schedule, warmup)
            assert _apd_core.lr_at(step, steps, lr, schedule, warmup) == old, (steps, lr, warmup, step)
            assert lr_at(step, steps, lr, schedule, warmup, warmup_from_zero=True, clamp=False) == old


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_spd_schedule_is_bit_identical_to_the_old_formula(schedule):
    for steps, lr, warmup in CASES:
        cfg = SPDConfig(lr=lr, steps=steps, schedule=schedule, warmup=warmup)
        for step in _steps(steps):
            assert cfg.lr_at(step) == old_spd_lr_at(cfg, step), (steps, lr, warmup, step)


def test_the_two_cosine_conventions_differ_only_in_the_last_bits():
    """Why the ``clamp`` switch exists: the two evaluation orders round differently on some steps."""
    diffs = [
        abs(lr_at(s, 1000, 1.0, "cosine", 0.0) - lr_at(s, 1000, 1.0, "cosine", 0.0, clamp=True)) for s in range(1000)
    ]
    assert 0.0 < max(diffs) < 1e-12


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_at(0, 10, 1.0, "exponential")
