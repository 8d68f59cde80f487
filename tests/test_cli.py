"""The ``pdbench`` command line itself: ``--version``, a closed stdout pipe, and a parser that imports no heavy
module (so ``pdbench --help`` answers at once)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import benchmark
from benchmark.cli import main

HEAVY = ("torch", "numpy", "scipy", "matplotlib", "benchmark.scoring", "leaderboard.build", "leaderboard.data")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"pdbench {benchmark.__version__}"


def test_a_closed_pipe_ends_quietly():
    """``pdbench list methods | head -1``: no BrokenPipeError traceback, no "Exception ignored" message. The
    reader here goes away before the command writes anything, so the write always meets a closed pipe."""
    code = "import sys; from benchmark.cli import main; sys.exit(main(['list', 'methods']))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=300)
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert proc.returncode == 141  # 128 + SIGPIPE, as for a tool killed by the closed pipe


def test_a_broken_pipe_elsewhere_is_not_swallowed():
    """Only a closed stdout ends quietly: a BrokenPipeError from any other pipe still fails loudly."""
    code = (
        "import sys\n"
        "import benchmark.commands.list as verb\n"
        "from benchmark.cli import main\n"
        "def boom(args): raise BrokenPipeError(32, 'a worker pipe')\n"
        "verb.cmd_list = boom\n"
        "sys.exit(main(['list', 'methods']))\n"
    )
    out = _run(code)
    assert out.returncode == 1 and "BrokenPipeError: [Errno 32] a worker pipe" in out.stderr


def test_list_methods_prints_a_table(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("method") and "oracle" in out


@pytest.mark.parametrize("module", ["benchmark.cli", "benchmark.commands.list", "benchmark.commands.leaderboard"])
def test_command_modules_import_no_heavy_module(module):
    out = _run(f"import sys, {module}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_building_the_parser_imports_no_heavy_module():
    """``pdbench --help`` must not wait for torch: every verb imports its heavy modules when it runs."""
    out = _run(
        "import sys, benchmark.cli; benchmark.cli.build_parser(); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
