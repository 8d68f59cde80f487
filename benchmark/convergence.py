"""Did a run's training loss flatten? The converged-headline check (blind-protocol issue).

A method that trains records its loss curve, ``RunRecord.loss_curve``: (step, loss) pairs, logged every so
many steps (single-batch losses are noisy, so the check compares medians). The run counts as converged when
the median loss over the last fifth of the logged points is no more than ``TOLERANCE`` below the median of
the fifth before it: another stretch of the same length would have gained less than that. A method with no
training loop (PCA, ICA, the reference rows) records no curve and gets ``None``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

#: The largest relative drop of the median loss between the last two fifths of the curve that still counts
#: as flat.
TOLERANCE = 0.05
#: Fewer logged points than this give no verdict.
MIN_POINTS = 10


def converged(curve: Sequence[Sequence[float]], tolerance: float = TOLERANCE) -> bool | None:
    """True where the loss had flattened by the end of ``curve`` ((step, loss) pairs in step order), False
    where it was still falling, None where the curve is too short or not finite."""
    try:
        losses = [float(point[1]) for point in curve]
    except (TypeError, ValueError, IndexError):
        return None  # not (step, loss) pairs: no verdict rather than a failed cell
    if len(losses) < MIN_POINTS or not all(math.isfinite(v) for v in losses):
        return None
    fifth = len(losses) // 5
    before = statistics.median(losses[-2 * fifth : -fifth])
    last = statistics.median(losses[-fifth:])
    return (before - last) <= tolerance * abs(before)
