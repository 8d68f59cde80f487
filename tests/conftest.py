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


#: Test files started first, longest first (seconds on one of two workers, measured): xdist's ``--dist loadfile``
#: hands out whole files in this order (see :func:`pytest_configure`), so a long file is not the run's tail while
#: the other worker idles. ``test_committed_board.py`` re-scores the committed board (about 2 minutes).
FIRST = (
    "test_committed_board.py",
    "test_security.py",  # 37 s
    "test_runner.py",  # 33 s
    "test_seed_groups.py",  # 29 s
    "test_headroom.py",  # 27 s
    "test_leaderboard.py",  # 26 s
    "test_submit.py",  # 25 s
    "test_html.py",  # 13 s
    "test_toy_models.py",  # 12 s
    "test_end_to_end.py",  # 11 s
    "test_blind.py",  # 11 s
)


def pytest_configure(config: pytest.Config) -> None:
    """Keep the collection order for xdist's file scheduling (it reorders files by their number of tests
    otherwise, which put the board's validation in the middle of the queue and made it the tail)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the files of :data:`FIRST` to the front in its order, each file's tests in their own order."""
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))


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
