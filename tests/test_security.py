"""Every attack of the trusted-results issue, as a regression test (docs/reliability.md, Threat model).

A results folder is believed because ``pdbench validate`` scores every ok cell again from its stored
decomposition, in a process that imports no submitted code; these tests tamper with a folder, or submit
hostile code, and check that the verdict or the score does not move.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import time
from pathlib import Path

import pytest
from faults import isolated_registries

from benchmark.cli import main
from benchmark.commands.validate import validate_folder
from benchmark.executors import Limits
from benchmark.lock import ResultsLock, ResultsLocked
from benchmark.registry import METHODS, RegistryError
from benchmark.results import Cell, load_results, path_part
from benchmark.runner import run_grid, store

TOY = "block_mlp"
HOSTILE = Path(__file__).parent / "faults" / "hostile_plugin.py"
EXIT_PLUGIN = Path(__file__).parent / "faults" / "exit_plugin.py"


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """A small, valid results folder: oracle, pca and random on block_mlp, seeds 0 and 1."""
    root = tmp_path_factory.mktemp("clean") / "results"
    cells = [Cell(TOY, m, s) for m in ("oracle", "pca", "random") for s in (0, 1)]
    run_grid(cells, root, executor="serial", progress=False, log=_quiet)
    assert validate_folder(root).ok
    return root


@pytest.fixture()
def folder(clean, tmp_path) -> Path:
    dest = tmp_path / "results"
    shutil.copytree(clean, dest)
    return dest


def _edit(path: Path, fn) -> None:
    rec = json.loads(path.read_text())
    fn(rec)
    path.write_text(json.dumps(rec))


def _errors(root: Path) -> str:
    report = validate_folder(root)
    assert not report.ok
    return "\n".join(report.errors)


# -- scores taken on trust --------------------------------------------------------------------------------
def test_an_edited_score_is_caught_naming_file_and_metric(folder):
    path = Cell(TOY, "pca", 0).path(folder)
    _edit(path, lambda r: r["metrics"].update(hungarian=0.999))
    errors = _errors(folder)
    assert str(path) in errors and "metric 'hungarian' is 0.999, recomputed from the stored decomposition" in errors


def test_an_error_row_turned_ok_with_an_absurd_score_is_caught(folder):
    path = Cell(TOY, "random", 1).path(folder)

    def forge(r):
        r["metrics"]["hungarian"] = 1e9
        r["decomposition"] = None

    _edit(path, forge)
    errors = _errors(folder)
    assert str(path) in errors and "missing required field(s) ['decomposition']" in errors


@pytest.mark.parametrize("part, key", [("method", "version"), ("toy", "weights_sha256"), ("method", "reference_row")])
def test_a_deleted_key_is_caught(folder, part, key):
    path = Cell(TOY, "pca", 1).path(folder)
    _edit(path, lambda r: r[part].pop(key))
    errors = _errors(folder)
    assert str(path) in errors and f"{part}.{key}" in errors


def test_a_relabelled_method_is_caught(folder):
    """The oracle's files moved to another method's place, their records edited to match."""
    src, dst = folder / TOY / "oracle", folder / TOY / "hidden-oracle"
    src.rename(dst)
    for p in dst.glob("seed*.json"):
        _edit(p, lambda r: (r["cell"].update(method="hidden-oracle"), r["method"].update(name="hidden-oracle")))
    errors = _errors(folder)
    assert "method 'hidden-oracle' is neither built in nor registered" in errors


def test_a_reference_row_relabelled_as_a_method_is_caught(folder):
    path = Cell(TOY, "pca", 0).path(folder)
    _edit(path, lambda r: r["method"].update(reference_row=False))
    assert "records reference_row=False" in _errors(folder)


def test_a_swapped_decomposition_is_caught(folder):
    """The oracle's stored decomposition put in place of pca's: its SHA-256 no longer matches."""
    shutil.copy(Cell(TOY, "oracle", 0).decomposition_path(folder), Cell(TOY, "pca", 0).decomposition_path(folder))
    assert "does not match the SHA-256 its result records" in _errors(folder)


def test_a_missing_decomposition_is_caught(folder):
    Cell(TOY, "random", 0).decomposition_path(folder).unlink()
    assert "cannot be read" in _errors(folder)


def test_cli_validate_fails_on_tampering(folder, capsys):
    _edit(Cell(TOY, "pca", 0).path(folder), lambda r: r["metrics"].update(mmcs=0.123))
    assert main(["validate", str(folder), "--no-artefacts"]) == 1
    assert "metric 'mmcs' is 0.123" in capsys.readouterr().out


def test_rescore_reproduces_every_metric_exactly(folder, capsys):
    before = {p: json.loads(p.read_text())["metrics"] for p in folder.rglob("seed*.json")}
    assert main(["rescore", str(folder)]) == 0
    assert "re-scored 6 result(s)" in capsys.readouterr().out
    assert before == {p: json.loads(p.read_text())["metrics"] for p in folder.rglob("seed*.json")}


# -- submitted code and the scorer ----------------------------------------------------------------------------
def test_a_plugin_that_patches_the_scorer_gains_nothing(tmp_path):
    """The patch only runs in the workers; scores and the validate verdict are computed where it never loads."""
    root = tmp_path / "results"
    cells = [Cell(TOY, "hostile_patch", 0), Cell(TOY, "oracle", 0)]
    with isolated_registries():
        run_grid(cells, root, plugins=[str(HOSTILE)], jobs=1, progress=False, log=_quiet)
    rows = {r["cell"]["method"]: r for r in load_results(root)[0]}
    assert rows["oracle"]["metrics"]["hungarian"] == pytest.approx(1.0)
    assert rows["hostile_patch"]["metrics"]["hungarian"] != 0.5
    assert rows["hostile_patch"]["method"]["plugin"]["file"] == "hostile_plugin.py"
    assert "hostile_patch" not in METHODS  # the plugin was never imported into this process
    report = validate_folder(root, plugins=(str(HOSTILE),))
    assert report.ok, report.errors


def test_a_method_gets_no_ground_truth_through_the_target(tmp_path):
    root = tmp_path / "results"
    with isolated_registries():
        run_grid([Cell(TOY, "hostile_peek", 0)], root, plugins=[str(HOSTILE)], jobs=1, progress=False, log=_quiet)
    (row,) = load_results(root)[0]
    assert row["status"] == "error" and "not built" in row["error"]["message"]


def test_a_plugin_cannot_claim_the_oracles_flags(tmp_path):
    root = tmp_path / "results"
    with isolated_registries():
        run_grid([Cell(TOY, "hostile_claims", 0)], root, plugins=[str(HOSTILE)], jobs=1, progress=False, log=_quiet)
    (row,) = load_results(root)[0]
    assert row["status"] == "ok", row["error"]
    assert row["method"]["reference_row"] is False and row["method"]["sees_ground_truth"] is False


def test_a_plugin_that_exits_while_imported_is_an_error(tmp_path, capsys):
    assert main(["validate", str(tmp_path), "--plugin", str(EXIT_PLUGIN)]) != 0
    assert main(["list", "--plugin", str(EXIT_PLUGIN)]) != 0
    assert "SystemExit" in capsys.readouterr().err


# -- names are identifiers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["..", ".", "../../x", "tms 5-2", "a/b", "", ".hidden", "x" * 101])
def test_a_bad_name_is_refused_at_registration(name):
    with isolated_registries(), pytest.raises(RegistryError, match="not a valid name"):
        METHODS.register(name, type("M", (METHODS.get("pca"),), {}))


def test_a_class_of_the_wrong_kind_is_refused():
    with isolated_registries(), pytest.raises(RegistryError, match="not a subclass of benchmark.method.Method"):
        METHODS.register("not-a-method", dict)


def test_names_map_to_paths_one_to_one(tmp_path):
    paths = {Cell("tms_5-2", m, 0).path(tmp_path) for m in ("a:b", "a_b", "a.b", "pca")}
    assert len(paths) == 4 and all(tmp_path in p.parents for p in paths)
    assert path_part("a:b") == "a%3Ab" and path_part(".x") == "%2Ex"  # '%' is not allowed in names: no clash


# -- one writer ----------------------------------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_holder(folder):
    before = {p: p.read_bytes() for p in folder.rglob("seed*")}
    with ResultsLock(folder):
        with pytest.raises(ResultsLocked, match=f"pid {os.getpid()}"):
            run_grid([Cell(TOY, "whole", 0)], folder, executor="serial", progress=False, log=_quiet)
    assert before == {p: p.read_bytes() for p in folder.rglob("seed*")}


def test_an_ok_row_is_never_replaced_by_an_error_row_without_rerun(folder):
    cell = Cell(TOY, "pca", 0)
    before = cell.path(folder).read_bytes()
    row = json.loads(before)
    row.update(status="error", metrics={}, metric_versions={}, decomposition=None)
    row["error"] = {"stage": "decomposing", "type": "X", "message": "m", "traceback": ""}
    assert store(folder, dict(row), rerun=False, log=_quiet) is None
    assert cell.path(folder).read_bytes() == before
    assert store(folder, dict(row), rerun=True, log=_quiet) == cell.path(folder)
    assert not cell.decomposition_path(folder).exists()


def test_start_up_removes_only_dead_writers_temp_files(tmp_path):
    root = tmp_path / "results"
    (root / TOY / "pca").mkdir(parents=True)
    live = root / TOY / "pca" / f".seed0.json.{os.getppid()}.abc.tmp"  # a running process's
    dead = root / TOY / "pca" / ".seed1.json.999999999.abc.tmp"
    foreign = root / TOY / "pca" / ".notes.tmp"
    for p in (live, dead, foreign):
        p.write_text("x")
    run_grid([Cell(TOY, "whole", 0)], root, executor="serial", progress=False, log=_quiet)
    assert live.exists() and foreign.exists() and not dead.exists()


# -- containment ---------------------------------------------------------------------------------------------
def test_a_workers_children_die_with_it(tmp_path, monkeypatch):
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("PDBENCH_TEST_CHILD_PID", str(pid_file))
    root = tmp_path / "results"
    with isolated_registries():
        run_grid(
            [Cell(TOY, "hostile_fork", 0)],
            root,
            plugins=[str(HOSTILE)],
            jobs=1,
            limits=Limits(time_s=8.0),
            progress=False,
            log=_quiet,
        )
    (row,) = load_results(root)[0]
    assert row["error"]["type"] == "TimeLimitExceeded"
    child = int(pid_file.read_text())
    if not _gone(child, 5):
        os.kill(child, signal.SIGKILL)
        pytest.fail("the worker's child process outlived the worker")


def _gone(pid: int, seconds: float) -> bool:
    """True once process ``pid`` no longer exists, polled for up to ``seconds``."""
    for _ in range(int(seconds * 10)):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_killing_the_runner_ends_its_workers_and_their_children(tmp_path):
    """SIGKILL on ``pdbench run`` (nothing of it runs afterwards): its worker, forked from the fork server and so
    not the runner's child, sees its lifeline close and takes its process group, the method's children, along."""
    import subprocess
    import sys

    pid_file = tmp_path / "child.pid"
    env = dict(os.environ, PDBENCH_TEST_CHILD_PID=str(pid_file))
    args = ["--plugin", str(HOSTILE), "run", "--toys", TOY, "--methods", "hostile_fork", "--seeds", "0"]
    args += ["--results", str(tmp_path / "results"), "--jobs", "1", "--time-limit", "600"]
    runner = subprocess.Popen([sys.executable, "-m", "benchmark.cli", *args], env=env, stdout=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if pid_file.exists() and pid_file.read_text():
                break
            assert runner.poll() is None, "the run ended before its cell started"
            time.sleep(0.1)
        child = int(pid_file.read_text())
    finally:
        runner.kill()
        runner.wait()
    if not _gone(child, 10):
        os.kill(child, signal.SIGKILL)
        pytest.fail("the method's child process outlived the killed runner")


def test_the_memory_guard_is_shared_among_the_workers_started(tmp_path):
    """--jobs 200 with one cell starts one worker, which gets the whole guard (not 1/200 of it)."""
    run_grid([Cell(TOY, "whole", 0)], tmp_path, jobs=200, progress=False, log=_quiet)
    (row,) = load_results(tmp_path)[0]
    assert row["status"] == "ok", row["error"]


def test_files_are_written_with_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run_grid([Cell(TOY, "whole", 0)], tmp_path, executor="serial", progress=False, log=_quiet)
    finally:
        os.umask(old)
    for p in (Cell(TOY, "whole", 0).path(tmp_path), Cell(TOY, "whole", 0).decomposition_path(tmp_path)):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_one_board_refuses_to_mix_budgets(folder):
    from leaderboard.data import BoardError, build_board

    _edit(Cell(TOY, "pca", 1).path(folder), lambda r: r["budget"].update(scale=0.1))
    results, _ = load_results(folder)
    with pytest.raises(BoardError, match="method 'pca' ran under 2 different budgets"):
        build_board(results)
