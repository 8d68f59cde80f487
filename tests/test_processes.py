"""Workers forked from the fork server (benchmark/processes.py) see what a spawned worker would: the parent's
working folder, ``sys.path`` and environment as they are when the worker starts, not when the server did."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys

import pytest

from benchmark.processes import ParentEnvironment, worker_context


def _report(environment: ParentEnvironment | None, out: str) -> None:
    if environment is not None:
        environment.apply()
    seen = [os.getcwd(), os.environ.get("PDBENCH_TEST_SEEN"), sys.path[0]]
    with open(out, "w") as f:
        json.dump(seen, f)


def _seen(ctx, environment: ParentEnvironment | None, out) -> list:  # noqa: ANN001
    p = ctx.Process(target=_report, args=(environment, str(out)))
    p.start()
    p.join(timeout=120)
    assert p.exitcode == 0
    return json.loads(out.read_text())


def test_a_worker_takes_the_parents_state_from_when_it_starts(tmp_path, monkeypatch):
    ctx = worker_context()
    _seen(ctx, None, tmp_path / "warm.json")  # the fork server (where there is one) starts before the changes
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PDBENCH_TEST_SEEN", "yes")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    assert _seen(ctx, ParentEnvironment.capture(), tmp_path / "applied.json") == [
        str(tmp_path),
        "yes",
        str(tmp_path / "plugins"),
    ]
    if "forkserver" not in mp.get_all_start_methods():
        pytest.skip("spawned workers inherit the environment themselves")
    stale = _seen(ctx, None, tmp_path / "stale.json")  # why the environment is sent: forked, it is the server's
    assert stale == [str(tmp_path), None, str(tmp_path / "plugins")]
