"""The ``pdbench`` command line. Each verb lives in its own module under ``benchmark/commands/``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from benchmark import commands
from benchmark.registry import RegistryError, load_plugin


def build_parser() -> argparse.ArgumentParser:
    help_ = "import a Python file that registers toy models, methods or metrics (repeatable)"
    common = argparse.ArgumentParser(add_help=False)  # lets --plugin also follow the verb
    common.add_argument("--plugin", dest="verb_plugin", action="append", default=[], metavar="FILE.py", help=help_)
    parser = argparse.ArgumentParser(
        prog="pdbench", description="A ground-truth benchmark for parameter-decomposition methods."
    )
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py", help=help_)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = [m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    for name in sorted(names, key=lambda n: (commands.ORDER.index(n) if n in commands.ORDER else 99, n)):
        importlib.import_module(f"benchmark.commands.{name}").add_parser(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for path in args.plugin + args.verb_plugin:
            load_plugin(path)
        return args.fn(args)
    except (RegistryError, KeyError) as exc:
        print(f"pdbench: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
