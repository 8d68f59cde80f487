"""The headroom gate (issue "toy ladder v2"): a toy ranks methods only if no fixed basis and no data-only
method comes near the oracle on it.

On a toy, the reference rows ``GATE_ROWS`` (the standard basis, PCA, one component for everything, and the
data-only ICA row) must each score at most the ``random`` row + ``MARGIN`` on the headline metric, and the
oracle exactly 1. A toy enters the headline track (``ToyModel.track = "headline"``) only if it passes;
``tests/test_headroom.py`` checks that the registered tracks agree with the gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmark.method import Budget
from benchmark.registry import METHODS
from benchmark.scoring import HEADLINE, score
from benchmark.toy import ToyModel

GATE_ROWS = ("neuron", "pca", "whole", "ica")
MARGIN = 0.1


@dataclass
class Headroom:
    """The gate's verdict on one toy instance: each reference row's headline score, and why it failed."""

    toy: str
    scores: dict[str, float]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def headroom(toy: ToyModel, seed: int = 0) -> Headroom:
    """Run the oracle, ``random`` and the ``GATE_ROWS`` on ``toy`` (method seed ``seed``) and apply the gate."""
    scores = {}
    for name in ("oracle", "random", *GATE_ROWS):
        method = METHODS.get(name)()
        dec = method.decompose(toy.target(with_ground_truth=method.sees_ground_truth), Budget(), seed)
        scores[name] = float(score(toy, dec, [HEADLINE])[HEADLINE] or 0.0)
    out = Headroom(toy.spec.name, scores)
    if abs(scores["oracle"] - 1.0) > 1e-6:
        out.failures.append(f"the oracle scores {scores['oracle']:.3f}, not 1")
    limit = scores["random"] + MARGIN
    out.failures += [f"{r} {scores[r]:.3f} > random + {MARGIN} = {limit:.3f}" for r in GATE_ROWS if scores[r] > limit]
    return out


def markdown(toys: list[ToyModel]) -> str:
    """The gate's table (docs/toy_models.md): each row's headline score per toy, and the verdict."""
    cols = ["oracle", "random", *GATE_ROWS]
    lines = ["| toy | track | " + " | ".join(cols) + " | gate |", "|---|---|" + "---|" * len(cols) + "---|"]
    for t in toys:
        v = headroom(t)
        verdict = "pass" if v.passed else "fail: " + "; ".join(v.failures)
        cells = " | ".join(f"{v.scores[c]:.3f}" for c in cols)
        name = t.spec.name + (f"@{t.spec.seed}" if t.track == "headline" else "")  # an instance of the suite
        lines.append(f"| `{name}` | {t.track} | {cells} | {verdict} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m benchmark.headroom [TOY ...]: the gate's table
    import sys

    import benchmark.cli  # noqa: F401  (registers the built-in toy models and methods)
    from benchmark.toy import load_toy

    print(markdown([load_toy(n) for n in sys.argv[1:]]))
