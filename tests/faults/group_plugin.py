"""Adapters that train seeds together and fail part of the way: one seed's error, or the whole worker dying.

Loaded in the test process (so the runner groups their seeds, as it does only for methods it knows) and by
the workers as a plugin file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from benchmark.decomposition import Decomposition
from benchmark.method import Budget, Method
from benchmark.registry import METHODS
from benchmark.toy import Target


class _Grouped(Method):
    version = "1"
    paper = "fault injection (tests/faults)"
    trains_seeds_together = True

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        return Decomposition([{n: p.detach().clone()} for n, p in target.params().items()])


@METHODS.register("group_one_fails")
class OneSeedFails(_Grouped):
    """Seed 1 of a group fails; the others return the weights as one component."""

    def decompose_seeds(
        self, target: Target, budget: Budget, seeds: Sequence[int], device: str = "cpu"
    ) -> list[Decomposition | Exception]:
        fail = ValueError("injected failure of seed 1")
        return [fail if s == 1 else self.decompose(target, budget, s) for s in seeds]


@METHODS.register("group_exit")
class GroupExits(_Grouped):
    """The worker process dies while the group trains."""

    def decompose_seeds(
        self, target: Target, budget: Budget, seeds: Sequence[int], device: str = "cpu"
    ) -> list[Decomposition | Exception]:
        torch.zeros(1)
        os._exit(3)
