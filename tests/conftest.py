"""Shared fixtures. Toy models are built once per test session through the normal weight cache
(``$PDBENCH_CACHE`` or ``~/.cache/pdbench``), so a clean machine trains each one once."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch

from benchmark.toy import ToyModel, load_toy

_built: dict[str, ToyModel] = {}

if os.environ.get("PYTEST_XDIST_WORKER"):  # the test command's workers share the cores: one torch thread each
    torch.set_num_threads(1)


#: Test files started first: xdist's ``--dist loadfile`` hands out whole files in collection order, so a long file
#: collected late is the run's tail while the other workers idle. ``test_submit.py`` re-scores the committed
#: board (2-3 minutes on one core).
FIRST = ("test_submit.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the long files of :data:`FIRST` to the front, each file's tests in their own order."""
    items.sort(key=lambda item: item.path.name not in FIRST)


def get_toy(name: str) -> ToyModel:
    """The built toy model ``name``, shared across the session (do not modify its weights)."""
    if name not in _built:
        _built[name] = load_toy(name)
    return _built[name]


@pytest.fixture(scope="session")
def toy() -> Callable[[str], ToyModel]:
    """``toy("tms_5-2")`` -> the built, session-shared toy model."""
    return get_toy


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread while a module's tests run (toy-sized ops are far slower under an
    oversubscribed thread pool); use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
