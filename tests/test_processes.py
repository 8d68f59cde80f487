"""Workers forked from the fork server (benchmark/processes.py) see what a spawned worker would: the parent's
working folder, ``sys.path`` and environment as they are when the worker starts, not when the server did."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys

import pytest

from benchmark.processes import IsolatedError, ParentEnvironment, run_isolated, worker_context


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


def _isolated_case(kind: str) -> object:
    """What an isolated call may do: answer (printing on the way), raise, exit, die, hang."""
    import signal
    import time

    if kind == "answer":
        print("output that goes nowhere")
        return {"env": os.environ.get("PDBENCH_TEST_SEEN"), "pid": os.getpid()}
    if kind == "raise":
        raise ImportError("needs a package this machine lacks")
    if kind == "exit":
        raise SystemExit(0)
    if kind == "die":
        os._exit(3)
    if kind == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(60)
    return None


def test_an_isolated_call_answers_in_another_process_with_the_parents_environment(monkeypatch, capfd):
    monkeypatch.setenv("PDBENCH_TEST_SEEN", "isolated")
    answer = run_isolated(_isolated_case, "answer", 120)
    assert answer["env"] == "isolated" and answer["pid"] != os.getpid()
    assert "output that goes nowhere" not in capfd.readouterr().out


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("raise", "ImportError: needs a package this machine lacks"),
        ("exit", "SystemExit: 0"),
        ("die", "it exited with code 3 and sent no answer"),
        ("segfault", "it died of SIGSEGV and sent no answer"),
        ("hang", "it took longer than 2 s"),
    ],
)
def test_an_isolated_call_that_fails_says_how(kind, message):
    with pytest.raises(IsolatedError, match=message):
        run_isolated(_isolated_case, kind, 2 if kind == "hang" else 120)
