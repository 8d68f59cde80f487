"""How pdbench starts its worker processes: forked from a fork server that has imported torch once.

A ``spawn``ed worker imports torch and the engine itself, about 3 CPU-seconds each on a 2-core machine (the
default tests start about 40 workers). Where the platform has one (Linux, macOS), workers are forked from a
``forkserver`` that imported :data:`PRELOAD` when it started; where not (Windows), they are spawned as before.
The fork server is a fresh, single-threaded process, so forking it is safe with torch.

multiprocessing sends a forked worker the parent's working folder and ``sys.path`` as they are when the worker
starts, but not its environment: the worker keeps the fork server's, which is the parent's from when the server
started. So a parent sends :class:`ParentEnvironment` with the work, and the worker takes it first. A forked
worker is also the fork server's child, not the parent's, and the server lives as long as its children: a
worker watches a pipe from its parent (:func:`watch_parent`) and ends when the parent is gone, however it died.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

PRELOAD = ("benchmark.executors", "benchmark.rescore")  # the engine, torch, the toy models and the metrics


def worker_context() -> BaseContext:
    """The ``forkserver`` context with :data:`PRELOAD` where the platform has one, else ``spawn``."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))  # read when the server starts (the first worker); later calls no-ops
    return ctx


@dataclass(frozen=True)
class ParentEnvironment:
    """The parent's environment variables, as a spawned worker would inherit them."""

    items: tuple[tuple[str, str], ...]

    @classmethod
    def capture(cls) -> ParentEnvironment:
        return cls(tuple(sorted(os.environ.items())))

    def apply(self) -> None:
        """Take this environment in a worker (called first thing there)."""
        os.environ.clear()
        os.environ.update(dict(self.items))


def watch_parent(lifeline: Connection) -> None:
    """End this worker, and its process group where it leads one (the method's children), when ``lifeline``'s
    other end closes: the parent never writes to it, so that happens only when the parent is gone."""

    def watch() -> None:
        try:
            while True:
                lifeline.recv_bytes()
        except (EOFError, OSError):
            pass
        if os.getpgid(0) == os.getpid():  # never signal a group this worker does not lead
            os.killpg(0, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="pdbench-parent-watch", daemon=True).start()


def init_pool_worker(environment: ParentEnvironment, lifeline: Connection) -> None:
    """A process pool's initializer: take the parent's environment and watch for the parent's end."""
    environment.apply()
    watch_parent(lifeline)


class IsolatedError(RuntimeError):
    """:func:`run_isolated`'s call raised, its process died, or it ran out of time; the message says which."""


def run_isolated(fn: Callable[[Any], Any], arg: Any, timeout_s: float) -> Any:
    """``fn(arg)`` in a worker process of its own (forked from the fork server: no interpreter to start), its
    value sent back; how code that must never run in this process (a submitted plugin) is read. The worker's
    output goes nowhere. Raises :class:`IsolatedError` with ``Type: message`` where ``fn`` raised (SystemExit
    included), the exit code where the worker died without an answer, or the time limit."""
    ctx = worker_context()
    answer, send = ctx.Pipe(duplex=False)
    life, lifeline = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_isolated, args=(fn, arg, send, ParentEnvironment.capture(), life), name="pdbench-isolated"
    )
    proc.start()
    send.close()
    life.close()
    try:
        if not answer.poll(timeout_s):
            raise IsolatedError(f"it took longer than {timeout_s:g} s")
        ok, value = answer.recv()
    except EOFError:
        proc.join(10)
        code = proc.exitcode
        how = f"died of {signal.Signals(-code).name}" if code is not None and code < 0 else f"exited with code {code}"
        raise IsolatedError(f"it {how} and sent no answer") from None
    finally:
        lifeline.close()  # a worker still running ends now (watch_parent)
        answer.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if not ok:
        raise IsolatedError(value)
    return value


def _isolated(
    fn: Callable[[Any], Any], arg: Any, send: Connection, environment: ParentEnvironment, life: Connection
) -> None:
    environment.apply()
    watch_parent(life)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        answer = (True, fn(arg))
    except (Exception, SystemExit) as exc:
        answer = (False, f"{type(exc).__name__}: {exc}")
    send.send(answer)
    send.close()
