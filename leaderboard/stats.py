"""Statistics over seeds: bootstrap means, success rates and rank bands (docs/design.md, section 7).

- :class:`Stat` and :func:`mean_ci`: a mean with its interval, as every leaderboard output shows it.
- :func:`bootstrap_ci`: mean over seeds with a bootstrap interval (BCa, falling back to percentile
  where BCa is undefined), through :func:`scipy.stats.bootstrap`.
- :func:`wilson_interval`: the Wilson score interval for a success rate (``scipy.stats.binomtest``).
- :func:`is_success`: the per-seed success criterion, ``headline >= SUCCESS_THRESHOLD``.
- :func:`rank_bands`: rank intervals from a paired bootstrap over the (toy model, seed) cells that all
  methods share (the MTEB recipe), so that methods whose order flips under resampling share a band.

See ``docs/metrics.md`` (Statistics) for the definitions and the reasoning.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

SUCCESS_THRESHOLD = 0.9
"""A seed succeeds when its headline score (matched mechanism recovery, in [0, 1]) is at least 0.9:
every mechanism is recovered, on average, within about 26 degrees by its own component."""


@dataclass
class Stat:
    """A mean with its interval; ``None`` fields where there is nothing to average."""

    mean: float | None = None
    low: float | None = None
    high: float | None = None


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Stat:
    """:func:`bootstrap_ci` of ``values`` as a :class:`Stat` (an empty :class:`Stat` for no values)."""
    if len(values) == 0:
        return Stat()
    mean, low, high = bootstrap_ci(values, confidence=confidence)
    return Stat(mean, low, high)


def _finite_array(values: Iterable[float], what: str) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: every value must be a number, got {list(values)!r}") from exc
    if arr.size == 0:
        raise ValueError(f"{what}: no values")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: values must be finite, got {arr.tolist()}")
    return arr


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def bootstrap_ci(
    values: Iterable[float], confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its bootstrap confidence interval.

    BCa interval (Efron 1987) from ``scipy.stats.bootstrap``; where BCa is undefined (all resampled
    means equal, or too few distinct values) the percentile interval is used. One value, or values that
    are all equal, give that value three times. Deterministic for a given ``seed``.
    """
    _check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    arr = _finite_array(values, "bootstrap_ci")
    mean = float(arr.mean())
    if arr.size == 1 or np.all(arr == arr[0]):
        return mean, mean, mean
    low = high = math.nan
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sps.bootstrap(
                (arr,),
                np.mean,
                confidence_level=confidence,
                n_resamples=n_resamples,
                method=method,
                rng=np.random.default_rng(seed),
                vectorized=True,
            )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            break
    # the mean of a sample always lies in its own percentile interval; guard against rounding at the edges
    return mean, min(low, mean), max(high, mean)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` for a success rate of ``successes`` out of ``n``."""
    _check_confidence(confidence)
    if isinstance(successes, bool) or isinstance(n, bool) or int(successes) != successes or int(n) != n:
        raise ValueError(f"successes and n must be integers, got {successes!r} and {n!r}")
    successes, n = int(successes), int(n)
    if n <= 0:
        raise ValueError(f"wilson_interval: n must be positive, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: successes must be in [0, n={n}], got {successes}")
    ci = sps.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def is_success(headline_value: float | None) -> bool:
    """The per-seed success criterion: ``headline_value >= SUCCESS_THRESHOLD`` (None, a failed or N/A
    cell, is not a success)."""
    if headline_value is None:
        return False
    v = float(headline_value)
    if math.isnan(v):
        raise ValueError("is_success: the headline value is NaN")
    return v >= SUCCESS_THRESHOLD


def success_rate(headline_values: Iterable[float | None], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(rate, low, high)``: the share of seeds that succeed, with its Wilson interval."""
    flags = [is_success(v) for v in headline_values]
    if not flags:
        raise ValueError("success_rate: no values")
    k = sum(flags)
    low, high = wilson_interval(k, len(flags), confidence)
    return k / len(flags), low, high


def rank_bands(
    scores: Mapping[str, Mapping[tuple[str, int], float]],
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    higher_is_better: bool = True,
) -> dict[str, tuple[float, int, int]]:
    """Rank intervals from a paired, toy-stratified bootstrap: ``method -> (mean rank, best, worst)``.

    ``scores[method][(toy, seed)]`` is a per-cell score (the headline). Only the cells that every method
    has are used, so the comparison is paired. A method's score is the mean over toy models of its mean
    over seeds (each toy model weighs the same). Each resample draws, for every toy model, its seeds with
    replacement (the same draw for every method) and ranks the methods (1 = best; exact ties share the
    better rank). The band is the central ``confidence`` interval of a method's rank over resamples, so
    methods that are statistically tied share rank values; the mean rank is the mean over resamples.
    """
    _check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    methods = list(scores)
    if not methods:
        raise ValueError("rank_bands: no methods")
    shared = set.intersection(*(set(scores[m]) for m in methods))
    if not shared:
        raise ValueError("rank_bands: the methods share no (toy, seed) cell")
    cells = sorted(shared, key=lambda c: (str(c[0]), c[1]))
    values = np.array([[scores[m][c] for c in cells] for m in methods], dtype=np.float64)  # [n_methods, n_cells]
    if not np.isfinite(values).all():
        bad = [m for m, row in zip(methods, values, strict=True) if not np.isfinite(row).all()]
        raise ValueError(f"rank_bands: non-finite scores for {bad}")
    if len(methods) == 1:
        return {methods[0]: (1.0, 1, 1)}
    by_toy: dict[str, list[int]] = defaultdict(list)
    for j, (toy, _) in enumerate(cells):
        by_toy[toy].append(j)
    rng = np.random.default_rng(seed)
    n_toys = len(by_toy)
    # weights [n_resamples, n_cells]: resampled counts per cell, normalised within each toy, toys equal
    weights = np.zeros((n_resamples, len(cells)))
    for idx in by_toy.values():
        draws = rng.integers(0, len(idx), size=(n_resamples, len(idx)))
        counts = (draws[:, :, None] == np.arange(len(idx))).sum(axis=1)  # [n_resamples, len(idx)]
        weights[:, idx] = counts / (len(idx) * n_toys)
    means = values @ weights.T  # [n_methods, n_resamples]
    sign = -1.0 if higher_is_better else 1.0
    ranks = sps.rankdata(sign * means, method="min", axis=0)  # [n_methods, n_resamples]
    alpha = (1.0 - confidence) / 2
    low = np.quantile(ranks, alpha, axis=1, method="lower")
    high = np.quantile(ranks, 1.0 - alpha, axis=1, method="higher")
    return {m: (float(ranks[i].mean()), int(low[i]), int(high[i])) for i, m in enumerate(methods)}
