"""The ``pdbench`` command line. Each verb lives in its own module under ``benchmark/commands/``.

Building the parser imports no heavy module (torch, numpy, scipy, matplotlib, the scorer, the leaderboard):
each verb imports what it needs when it runs, so ``pdbench --help`` and ``pdbench --version`` are quick.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import select
import sys
from collections.abc import Iterable
from pathlib import Path

from benchmark import __version__, commands
from benchmark.registry import RegistryError, load_plugin


def build_parser() -> argparse.ArgumentParser:
    help_ = "import a Python file that registers toy models, methods or metrics (repeatable)"
    common = argparse.ArgumentParser(add_help=False)  # lets --plugin also follow the verb
    common.add_argument("--plugin", dest="verb_plugin", action="append", default=[], metavar="FILE.py", help=help_)
    parser = argparse.ArgumentParser(
        prog="pdbench", description="A ground-truth benchmark for parameter-decomposition methods."
    )
    parser.add_argument("--version", action="version", version=f"pdbench {__version__}")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py", help=help_)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = [m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    for name in sorted(names, key=lambda n: (commands.ORDER.index(n) if n in commands.ORDER else 99, n)):
        importlib.import_module(f"benchmark.commands.{name}").add_parser(sub, common)
    return parser


def load_plugins(paths: Iterable[str | Path]) -> None:
    """Import every ``--plugin`` file (given before or after the verb), in order, before the verb runs."""
    for path in paths:
        load_plugin(path)


def _stdout_is_broken() -> bool:
    """Whether stdout is a pipe whose reader has gone (so a BrokenPipeError came from stdout, not from, say, a
    worker process's pipe)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout is not a file (a test's capture)
        return False


def _stdout_closed() -> int:
    """The reader of stdout went away (``pdbench list | head -1``): stop quietly, as a Unix tool does.

    Python would otherwise print a BrokenPipeError traceback, or an "Exception ignored" message when it
    flushes stdout at exit; pointing stdout at /dev/null first silences that final flush."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (captured by a test): nothing to flush into
        pass
    return 141  # 128 + SIGPIPE, the status a shell reports for a tool killed by a closed pipe


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        try:
            if getattr(args, "load_plugins_here", True):  # run, validate, rescore keep plugin code out of this process
                load_plugins(args.plugin + args.verb_plugin)
            rc = args.fn(args)
        except (RegistryError, KeyError) as exc:
            print(f"pdbench: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            rc = 2
        sys.stdout.flush()  # a closed pipe shows up here rather than at interpreter exit
        return rc
    except BrokenPipeError:
        if not _stdout_is_broken():
            raise
        return _stdout_closed()


if __name__ == "__main__":
    sys.exit(main())
