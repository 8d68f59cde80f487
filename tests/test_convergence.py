"""The converged check (benchmark.convergence): a loss curve that still falls is not converged, a flat or
noisy-flat one is, and a short or broken curve gives no verdict."""

from __future__ import annotations

import math

from benchmark.convergence import MIN_POINTS, converged


def test_a_falling_curve_is_not_converged_and_a_flat_one_is():
    falling = [(s, 1.0 / (1 + s)) for s in range(50)]
    flat = [(s, 0.1 + 0.05 * math.exp(-s)) for s in range(50)]
    assert converged(falling) is False
    assert converged(flat) is True


def test_single_batch_noise_around_a_plateau_counts_as_flat():
    noisy = [(s, 0.2 * (1 + 0.3 * (-1) ** s)) for s in range(40)]  # +-30% batch noise, no trend
    assert converged(noisy) is True


def test_short_broken_or_non_finite_curves_give_no_verdict():
    assert converged([(s, 1.0) for s in range(MIN_POINTS - 1)]) is None
    assert converged([(s, float("nan")) for s in range(20)]) is None
    assert converged([1, 2, 3] * 5) is None
    assert converged(()) is None
