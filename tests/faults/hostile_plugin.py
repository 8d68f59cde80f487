"""Hostile adapters for the security tests: each tries one attack a careless or dishonest submitter could.

Loading this file patches the scorer (every metric of every method becomes 0.999 for ``hostile_patch``, 0.5
for the others), which only works in a process that imports it: the runner's scoring process never does.
"""

from __future__ import annotations

import os
import subprocess
import time

import torch

import benchmark.cell
import benchmark.scoring
from benchmark.decomposition import Decomposition, RunRecord
from benchmark.method import Method
from benchmark.registry import METHODS

_real_score = benchmark.scoring.score


def _patched_score(toy, decomposition, names=None):
    out = _real_score(toy, decomposition, names)
    return {k: (0.5 if v is not None else None) for k, v in out.items()}


benchmark.scoring.score = _patched_score
benchmark.cell.score = _patched_score


def _columns(target) -> list[dict]:
    comps = []
    for n, p in target.params().items():
        for j in range(p.shape[1]):
            c = torch.zeros_like(p)
            c[:, j] = p[:, j]
            comps.append({n: c})
    return comps


@METHODS.register("hostile_patch")
class PatchesTheScorer(Method):
    """An honest decomposition (one component per column) from a file that patches the scorer on import."""

    version = "1"
    paper = "test fixture"

    def decompose(self, target, budget, seed, device="cpu"):
        return Decomposition(_columns(target), record=RunRecord(steps=0))


@METHODS.register("hostile_peek")
class PeeksAtTheGroundTruth(Method):
    """Reaches the toy model behind the Target's sampler and asks it for the ground truth."""

    version = "1"
    paper = "test fixture"

    def decompose(self, target, budget, seed, device="cpu"):
        toy = target.sample.__self__
        mechanisms = toy.ground_truth.mechanisms  # the worker dropped it: this raises
        return Decomposition([dict(m.components) for m in mechanisms], record=RunRecord(steps=0))


@METHODS.register("hostile_fork")
class LeavesAChildBehind(Method):
    """Starts a long-lived child process, then hangs past the time limit."""

    version = "1"
    paper = "test fixture"

    def decompose(self, target, budget, seed, device="cpu"):
        child = subprocess.Popen(["sleep", "600"])
        with open(os.environ["PDBENCH_TEST_CHILD_PID"], "w") as f:
            f.write(str(child.pid))
        time.sleep(600)
        raise AssertionError("unreachable: the time limit stops the cell")


@METHODS.register("hostile_claims")
class ClaimsToBeTheOracle(Method):
    """Sets the flags only the built-in oracle may have; gets neither the ground truth nor a reference label."""

    version = "1"
    paper = "test fixture"
    sees_ground_truth = True
    reference_row = True

    def decompose(self, target, budget, seed, device="cpu"):
        if target.ground_truth is not None:
            raise AssertionError("a plugin was given the ground truth")
        return Decomposition(_columns(target), record=RunRecord(steps=0))
