"""Fault-injection adapters, one per failure mode a submitted method or toy model can show.

Loaded like a user's plugin (``--plugin tests/faults/fault_plugin.py``), so the worker processes load it
the same way. Each class registers ``fault_<mode>``; ``tests/faults/expected.py`` says which error row each
must produce.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import torch
from torch import nn

from benchmark.decomposition import Decomposition, RunRecord
from benchmark.method import Budget, Method
from benchmark.registry import METHODS, TOY_MODELS
from benchmark.toy import Target
from toy_models.tms import TMS


def _good(target: Target) -> list[dict[str, torch.Tensor]]:
    """One valid component per decomposed parameter: the parameter itself."""
    return [{n: p.detach().clone()} for n, p in target.params().items()]


class _Fault(Method):
    version = "1"
    paper = "fault injection (tests/faults)"


@METHODS.register("fault_raise")
class Raises(_Fault):
    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        raise RuntimeError("injected failure inside decompose")


@METHODS.register("fault_hang")
class Hangs(_Fault):
    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        while True:
            time.sleep(1.0)


@METHODS.register("fault_nan")
class ReturnsNaN(_Fault):
    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        comps = _good(target)
        next(iter(comps[0].values()))[0, 0] = float("nan")
        return Decomposition(comps)


@METHODS.register("fault_shape")
class WrongShape(_Fault):
    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        return Decomposition([{n: torch.zeros(*p.shape, 3)} for n, p in target.params().items()])


@METHODS.register("fault_param")
class WrongParam(_Fault):
    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        return Decomposition([{"not_a_parameter": torch.ones(2, 5)}])


@METHODS.register("fault_device")
class WrongDevice(_Fault):
    """Components on a device the run did not ask for ('meta' stands in for a GPU on a CPU machine)."""

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        return Decomposition([{n: torch.empty(p.shape, device="meta")} for n, p in target.params().items()])


@METHODS.register("fault_type")
class WrongType(_Fault):
    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Any:
        return {"components": _good(target)}


@METHODS.register("fault_memory")
class EatsMemory(_Fault):
    """Allocates (and touches) 256 MiB blocks until something stops it."""

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        hoard = []
        while True:
            hoard.append(torch.ones(64 * 2**20))


@METHODS.register("fault_memory_huge")
class HugeAllocation(_Fault):
    """One allocation of 4 TiB: refused at once by the allocator."""

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        torch.empty(2**40, dtype=torch.float32).fill_(1.0)
        raise AssertionError("unreachable: a 4 TiB allocation succeeded")


@METHODS.register("fault_segfault")
class Segfaults(_Fault):
    """Kills its own process the way a crash in native code would."""

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(10)
        raise AssertionError("unreachable")


@METHODS.register("fault_exit")
class CallsExit(_Fault):
    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        sys.exit(3)


@METHODS.register("fault_state")
class ChangesGlobalState(_Fault):
    """Valid components, but leaves float64 as torch's default dtype and autograd off behind it."""

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
        return Decomposition(_good(target), record=RunRecord(steps=1))


@METHODS.register("fault_record")
class BadRecord(_Fault):
    """Valid components, but a run record full of things JSON cannot hold (tensor, NaN, object)."""

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        record = RunRecord(steps="many", hparams={"lr": float("nan"), "w": torch.ones(2), "obj": object()})
        return Decomposition(_good(target), record=record)


@METHODS.register("fault_state_probe")
class StateProbe(_Fault):
    """Valid, and fails if a previous cell's global torch state leaked into its worker."""

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        if torch.get_default_dtype() != torch.float32 or not torch.is_grad_enabled():
            raise RuntimeError("global torch state leaked from a previous cell")
        return Decomposition(_good(target), record=RunRecord(steps=1))


class BrokenToy(TMS):
    """A toy model whose training raises."""

    def __init__(self, seed: int = 0):
        super().__init__(name="fault_toy", seed=seed)

    def fit(self, model: nn.Module, seed: int) -> dict[str, Any]:
        raise RuntimeError("injected failure while training the toy model")


TOY_MODELS.register("fault_toy", BrokenToy)


@METHODS.register("slow_valid")
class SlowValid(_Fault):
    """A valid method that takes ``seconds`` (default 1 s): gives an interruption test time to strike."""

    defaults = {"seconds": 1.0}

    def decompose(self, target: Target, budget: Budget, seed: int, device: str = "cpu") -> Decomposition:
        time.sleep(self.hparams(target.spec.name)["seconds"])
        return Decomposition(_good(target), record=RunRecord(steps=1, hparams=self.hparams(target.spec.name)))
