"""Statistics over seeds: bootstrap intervals, Wilson intervals, success criterion, rank bands."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leaderboard.stats import (
    SUCCESS_THRESHOLD,
    bootstrap_ci,
    is_success,
    rank_bands,
    success_rate,
    wilson_interval,
)


def test_bootstrap_single_and_constant_values():
    assert bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_bootstrap_interval_contains_mean_and_is_deterministic():
    vals = [0.9, 0.95, 1.0, 0.8, 0.99]
    mean, low, high = bootstrap_ci(vals)
    assert mean == pytest.approx(0.928)
    assert min(vals) <= low < mean < high <= max(vals)
    assert bootstrap_ci(vals) == (mean, low, high)
    assert bootstrap_ci(vals, seed=3) == bootstrap_ci(vals, seed=3)


def test_bootstrap_covers_the_true_mean_about_95_percent():
    """Coverage check: normal samples of size 20, true mean 0; BCa should cover roughly 95% of the time."""
    rng = np.random.default_rng(0)
    hits = 0
    trials = 200
    for t in range(trials):
        _, low, high = bootstrap_ci(rng.normal(size=20), n_resamples=2000, seed=t)
        hits += low <= 0.0 <= high
    assert 0.88 <= hits / trials <= 0.99


def test_bootstrap_narrows_with_confidence():
    vals = [0.1, 0.4, 0.35, 0.8, 0.6, 0.2]
    _, l95, h95 = bootstrap_ci(vals, confidence=0.95)
    _, l50, h50 = bootstrap_ci(vals, confidence=0.5)
    assert l95 <= l50 and h50 <= h95 and (h50 - l50) < (h95 - l95)


@pytest.mark.parametrize("bad", [[], [float("nan"), 1.0], [1.0, float("inf")], [None, 1.0]])
def test_bootstrap_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        bootstrap_ci(bad)


def test_bootstrap_rejects_bad_confidence():
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=95)


def test_wilson_hand_computed():
    # 3 of 10, z = 1.959964: centre (0.3 + z^2/20) / (1 + z^2/10), half-width z sqrt(0.021 + z^2/400) / (1 + z^2/10)
    z = 1.959963984540054
    centre = (0.3 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.3 * 0.7 / 10 + z * z / 400) / (1 + z * z / 10)
    low, high = wilson_interval(3, 10)
    assert low == pytest.approx(centre - half, abs=1e-9) and high == pytest.approx(centre + half, abs=1e-9)
    assert low == pytest.approx(0.1078, abs=1e-4) and high == pytest.approx(0.6032, abs=1e-4)


def test_wilson_edges():
    low, high = wilson_interval(5, 5)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.5655, abs=1e-4)
    low, high = wilson_interval(0, 5)
    assert low == pytest.approx(0.0) and high == pytest.approx(0.4345, abs=1e-4)


@pytest.mark.parametrize("k,n", [(1, 0), (-1, 5), (6, 5), (1.5, 3)])
def test_wilson_rejects_bad_counts(k, n):
    with pytest.raises(ValueError):
        wilson_interval(k, n)


def test_success_criterion():
    assert is_success(SUCCESS_THRESHOLD) and is_success(1.0)
    assert not is_success(SUCCESS_THRESHOLD - 1e-9) and not is_success(None)
    with pytest.raises(ValueError):
        is_success(float("nan"))
    rate, low, high = success_rate([1.0, 0.95, 0.2, None])
    assert rate == 0.5 and (low, high) == wilson_interval(2, 4)


def _cells(rng, mean_t, mean_u, noise, n=5):
    return {("t", s): mean_t + noise * rng.normal() for s in range(n)} | {
        ("u", s): mean_u + noise * rng.normal() for s in range(n)
    }


def test_rank_bands_tied_methods_share_a_band_and_separated_do_not():
    rng = np.random.default_rng(0)
    scores = {"a": _cells(rng, 0.9, 0.8, 0.02), "b": _cells(rng, 0.9, 0.8, 0.02), "c": _cells(rng, 0.5, 0.3, 0.02)}
    bands = rank_bands(scores)
    assert bands["a"][1] == 1 and bands["a"][2] == 2 and bands["b"][1] == 1 and bands["b"][2] == 2
    assert bands["c"] == (3.0, 3, 3)
    assert rank_bands(scores) == bands  # deterministic


def test_rank_bands_exact_ties_and_direction():
    same = {("t", s): 0.7 for s in range(3)}
    bands = rank_bands({"x": dict(same), "y": dict(same)})
    assert bands == {"x": (1.0, 1, 1), "y": (1.0, 1, 1)}
    lo = {("t", s): 0.1 for s in range(3)}
    assert rank_bands({"x": dict(same), "y": lo}, higher_is_better=False)["y"] == (1.0, 1, 1)


def test_rank_bands_uses_only_shared_cells_and_checks_input():
    a = {("t", 0): 1.0, ("t", 1): 1.0, ("u", 0): 0.0}
    b = {("t", 0): 0.5, ("t", 1): 0.5}
    assert rank_bands({"a": a, "b": b}) == {"a": (1.0, 1, 1), "b": (2.0, 2, 2)}
    with pytest.raises(ValueError, match="share no"):
        rank_bands({"a": {("t", 0): 1.0}, "b": {("u", 0): 1.0}})
    with pytest.raises(ValueError, match="non-finite"):
        rank_bands({"a": {("t", 0): float("nan")}, "b": {("t", 0): 1.0}})
    with pytest.raises(ValueError):
        rank_bands({})


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=12))
def test_bootstrap_interval_brackets_mean(vals):
    mean, low, high = bootstrap_ci(vals, n_resamples=500)
    assert low <= mean + 1e-12 and mean - 1e-12 <= high
    assert min(vals) - 1e-12 <= low and high <= max(vals) + 1e-12


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 200).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_point_estimate(kn):
    k, n = kn
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 1000), st.floats(-0.5, 0.5))
def test_rank_bands_ignore_method_order_and_common_shifts(seed, shift):
    rng = np.random.default_rng(seed)
    scores = {m: _cells(rng, rng.uniform(0, 1), rng.uniform(0, 1), 0.1, n=4) for m in "abcd"}
    bands = rank_bands(scores, n_resamples=300)
    reordered = rank_bands({m: scores[m] for m in "dcba"}, n_resamples=300)
    shifted = rank_bands({m: {c: v + shift for c, v in cells.items()} for m, cells in scores.items()}, n_resamples=300)
    for m in "abcd":
        assert 1 <= bands[m][1] <= bands[m][2] <= 4 and 1.0 <= bands[m][0] <= 4.0
        assert shifted[m] == pytest.approx(bands[m], abs=1e-9)
        assert reordered[m] == bands[m]  # the resampling draws do not depend on the methods' order
