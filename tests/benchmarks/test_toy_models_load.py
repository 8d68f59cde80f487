"""Loading toy models from the weight cache (issue 3: "cached models load in well under a second").

Run with ``pytest tests/benchmarks --benchmark-enable``. Each case builds a model once into a temporary
cache (with shortened training: the load is timed, not the training), then times a fresh ``build`` from
it: the SHA-256 checks, the state-dict load and the ground truth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from torch import nn

from benchmark.cache import WeightCache
from benchmark.toy import ToyModel
from toy_models.circuits import CircuitSuperposition
from toy_models.resid_mlp import ResidMLP
from toy_models.shared_neurons import SharedNeurons
from toy_models.tms import TMS


class _ResidAnyHealth(ResidMLP):
    """2 training steps cannot make a healthy model; the load time does not depend on it."""

    def health(self, model: nn.Module, info: dict[str, Any]) -> str | None:
        return None


CASES: dict[str, Callable[[], ToyModel]] = {
    "tms_5-2": lambda: TMS(steps=100),
    "tmcs_10-5-10": lambda: CircuitSuperposition(epochs=1),
    "higher_rank_30-10-30": lambda: CircuitSuperposition(30, 10, group=5, epochs=1),
    "resid_mlp1": lambda: _ResidAnyHealth(1, steps=2),
    "shared_neurons": SharedNeurons,
}


@pytest.mark.parametrize("name", list(CASES))
def test_cached_load(benchmark, tmp_path, name):
    cache = WeightCache(tmp_path)
    CASES[name]().build(cache)
    toy = benchmark(lambda: CASES[name]().build(cache))
    assert toy.build_info.from_cache
