"""Leaderboard rendering from hand-made result records: statistics, error rows, contested tiers, reference rows,
every output format, determinism and the ``pdbench leaderboard`` command."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.results import SCHEMA_VERSION, ResultError, validate_result, write_result
from leaderboard.build import (
    MARKER,
    PACKAGE_DIR,
    OutputFolderError,
    check_output_folder,
    marker_bytes,
    read_marker,
    render_all,
    stale_files,
    update_readme,
    write_all,
)
from leaderboard.csv_tables import csv_cell
from leaderboard.data import BoardError, build_board
from leaderboard.latex import escape as tex_escape
from leaderboard.markdown import md_escape, render_markdown
from leaderboard.terminal import term_escape, terminal_table

TOYS = {"toy_a": (0, "exact"), "toy_b": (1, "exact"), "toy_c": (1, "strong"), "toy_x": (4, "contested")}


def fake(
    toy: str,
    method: str,
    seed: int,
    value: float | None,
    *,
    ref: bool = False,
    error: str | None = None,
    wall: float = 0.5,
    version: str = "1",
    sha: str | None = None,
) -> dict:
    tier, gt = TOYS[toy]
    r = {
        "schema_version": SCHEMA_VERSION,
        "benchmark_version": "0.1.0",
        "git_commit": "x",
        "created_at": "t",
        "cell": {"toy": toy, "method": method, "seed": seed},
        "budget": {"steps": None, "seconds": None, "scale": 1.0},
        "device": "cpu",
        "env": {},
        "status": "error" if error else "ok",
        "metrics": {} if error else {"hungarian": value, "mmcs": value},
        "metric_versions": {} if error else {"hungarian": "2", "mmcs": "2"},
        "headline": "hungarian",
        "toy": {"name": toy, "tier": tier, "gt_status": gt, "version": "1", "weights_sha256": sha or f"{toy}-sha"},
        "method": {
            "name": method,
            "version": version,
            "paper": "p",
            "reference_row": ref,
            "sees_ground_truth": method == "oracle",
            "hparams": {},
            "class": "m:C",
        },
        "cost": {"wall_time_s": wall},
        "error": None
        if not error
        else {"stage": "decomposing", "type": "RuntimeError", "message": error, "traceback": "tb"},
    }
    validate_result(r)
    return r


def grid() -> list[dict]:
    rs = []
    vals = {"good": [0.95, 0.92, 0.97], "meh": [0.5, 0.6, 0.4]}
    for toy in TOYS:
        for s in range(3):
            rs.append(fake(toy, "oracle", s, 1.0, ref=True, wall=0.001))
            rs.append(fake(toy, "random", s, 0.1 + 0.01 * s, ref=True, wall=0.01))
            rs.append(fake(toy, "good", s, vals["good"][s], wall=2.0))
            if toy == "toy_b" and s == 1:
                rs.append(fake(toy, "meh", s, None, error="boom: out of patience"))
            else:
                rs.append(fake(toy, "meh", s, vals["meh"][s], wall=1.0))
    return rs


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """Every artefact of :func:`grid`, rendered once for the module."""
    return render_all(grid())[1]


def test_cell_statistics_are_the_hand_computed_ones():
    board = build_board(grid())
    c = board.cell("meh", "toy_a")
    assert c.score.mean == pytest.approx(0.5)
    assert c.score.low <= 0.5 <= c.score.high and c.score.low >= 0.4 and c.score.high <= 0.6
    assert c.n_success == 0 and board.cell("good", "toy_a").n_success == 3  # threshold 0.9
    # the failed seed scores 0 and is kept: (0.5 + 0 + 0.4) / 3
    e = board.cell("meh", "toy_b")
    assert e.values == {(0, 0): 0.5, (0, 1): 0.0, (0, 2): 0.4} and list(e.errors) == [(0, 1)]
    assert e.score.mean == pytest.approx(0.3)


def test_tier_and_overall_scores_average_toy_means_and_leave_out_contested():
    board = build_board(grid())
    tier1 = next(t for t in board.tiers if t.key == "tier1")
    row = next(r for r in tier1.rows if r.method.name == "meh")
    assert row.score.mean == pytest.approx((0.3 + 0.5) / 2)  # toy_b (with the failure), toy_c
    assert [t.name for t in board.overall.toys] == ["toy_a", "toy_b", "toy_c"]  # toy_x is contested
    overall = next(r for r in board.overall.rows if r.method.name == "meh")
    assert overall.score.mean == pytest.approx((0.5 + 0.3 + 0.5) / 3)
    assert overall.n_errors == 1 and overall.n_runs == 9
    tier4 = next(t for t in board.tiers if t.key == "tier4")
    assert [t.name for t in tier4.toys] == ["toy_x"] and "contested" in tier4.note
    assert 4 not in overall.by_tier


def test_only_submitted_methods_are_ranked_and_reference_rows_are_marked():
    board = build_board(grid())
    ranks = {r.method.name: r.rank for r in board.overall.rows}
    assert ranks["oracle"] is None and ranks["random"] is None
    assert ranks["good"][1] == 1 and ranks["meh"][1] == 2  # clearly separated: bands [1, 1] and [2, 2]
    md = render_markdown(board)
    assert "oracle (ref)" in md and "random (ref)" in md and "good (ref)" not in md


def test_failed_cells_are_marked_in_every_output(files):
    md = files["LEADERBOARD.md"].decode()
    assert "✗1/3" in md and "boom: out of patience" in md
    assert "$\\times1/3$" in files["latex/tier1.tex"].decode()
    assert 'class="errmark"' in files["index.html"].decode()
    rows = list(csv.DictReader(io.StringIO(files["leaderboard.csv"].decode())))
    cell = next(r for r in rows if r["table"] == "cell" and r["toy"] == "toy_b" and r["method"] == "meh")
    assert cell["n_errors"] == "1" and float(cell["mean"]) == pytest.approx(0.3)
    raw = list(csv.DictReader(io.StringIO(files["cells.csv"].decode())))
    err = next(r for r in raw if r["status"] == "error")
    assert err["toy"] == "toy_b" and err["error"].startswith("RuntimeError: boom")


def test_a_cell_whose_seeds_all_failed_reads_error():
    rs = grid() + [fake("toy_a", "broken", s, None, error="no") for s in range(3)]
    board = build_board(rs)
    md = render_markdown(board)
    tier0 = md.split("## Reproduction track, tier 0")[1].split("## Reproduction track, tier 1")[0]
    assert "ERROR ✗3/3" in next(ln for ln in tier0.splitlines() if "broken" in ln)
    overall = next(ln for ln in md.split("## Reproduction track, tier 0")[0].splitlines() if "broken" in ln)
    assert "(partial)" in overall and "✗3" in overall  # only on toy_a: not ranked, marked partial


def test_latex_is_booktabs_and_escaped(files):
    tex = files["latex/overall.tex"].decode()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\textit{oracle}$^\\dagger$" in tex
    tier = files["latex/tier0.tex"].decode()
    assert "\\texttt{toy\\_a}" in tier and "toy_a" not in tier
    body = [ln for ln in tex.splitlines() if ln.endswith("\\\\")]
    assert len({ln.count("&") for ln in body}) == 1  # every row has the header's number of columns


def test_regenerating_gives_identical_bytes_and_no_timestamps(files):
    a = files
    _, b = render_all(list(reversed(grid())))
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert {"figures/score_by_tier.png", "figures/score_vs_cpu.pdf", "index.html", "LEADERBOARD.md"} <= set(a)
    assert b"CreationDate" not in a["figures/score_by_tier.pdf"]


def test_conflicting_toy_builds_are_refused():
    rs = grid() + [fake("toy_a", "other", 0, 0.5, sha="different")]
    with pytest.raises(BoardError, match="two builds"):
        build_board(rs)


def test_mixed_method_versions_are_refused():
    rs = grid() + [fake("toy_c", "good", 7, 0.5, version="2")]
    with pytest.raises(BoardError, match="versions"):
        build_board(rs)


def test_rank_bands_overlap_for_tied_methods():
    rs = []
    for toy in ("toy_a", "toy_b"):
        for s in range(3):
            rs.append(fake(toy, "m1", s, [0.5, 0.7, 0.6][s]))
            rs.append(fake(toy, "m2", s, [0.7, 0.5, 0.6][s]))
    bands = {r.method.name: r.rank for r in build_board(rs).overall.rows}
    assert bands["m1"][1] == bands["m2"][1] == 1 and bands["m1"][2] == bands["m2"][2] == 2


def _store(rs: list[dict], root: Path) -> None:
    for r in rs:
        write_result(root, r)


def test_leaderboard_command_writes_checks_and_updates_a_readme(tmp_path, files):
    results = tmp_path / "board" / "results"
    _store(grid(), results)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- LEADERBOARD:START -->\nold\n<!-- LEADERBOARD:END -->\nrest\n")
    assert main(["leaderboard", "--results", str(results), "--readme", str(readme)]) == 0
    board = tmp_path / "board"
    assert {
        p.relative_to(board).as_posix() for p in board.rglob("*") if p.is_file() and "results" not in p.parts
    } == set(files) | {MARKER}
    assert all((board / k).read_bytes() == v for k, v in files.items())  # the files the library renders
    assert read_marker(board) == sorted(files)
    text = readme.read_text()
    assert "old" not in text and "| good " in text and "board/figures/score_by_tier.png" in text
    assert text.startswith("intro\n") and text.endswith("rest\n")
    assert main(["leaderboard", "--results", str(results), "--check"]) == 0
    # a file an earlier run generated (listed in its marker) that is no longer generated is stale, then removed
    (board / "latex" / "tier9.tex").write_text("stale")
    (board / MARKER).write_bytes(marker_bytes([*files, "latex/tier9.tex"]))
    assert main(["leaderboard", "--results", str(results), "--check"]) == 1
    write_all(board, files)
    assert not (board / "latex" / "tier9.tex").exists() and read_marker(board) == sorted(files)
    assert main(["leaderboard", "--results", str(results), "--check"]) == 0
    with pytest.raises(ValueError, match="markers"):
        update_readme(board / "LEADERBOARD.md", build_board(grid()))


def test_leaderboard_command_errors_clearly(tmp_path, capsys):
    assert main(["leaderboard", "--results", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["leaderboard", "--results", str(tmp_path / "empty")]) == 1
    assert "no valid results" in capsys.readouterr().err


def test_overall_numbers_match_the_csv(files):
    rows = list(csv.DictReader(io.StringIO(files["leaderboard.csv"].decode())))
    good = next(r for r in rows if r["table"] == "overall" and r["method"] == "good")
    assert float(good["mean"]) == pytest.approx((0.95 + 0.92 + 0.97) / 3)
    assert good["rank_best"] == "1" and good["reference_row"] == "0"
    assert all(math.isfinite(float(good[k])) for k in ("ci_low", "ci_high", "success_low", "success_high"))
    assert json.loads(json.dumps(rows))  # plain strings only


@pytest.mark.skipif(
    shutil.which("pdflatex") is None,
    reason="pdflatex is not installed (Debian: texlive-latex-base and texlive-latex-recommended for booktabs)",
)
def test_latex_tables_compile(files, tmp_path):
    inputs = []
    for name, data in files.items():
        if name.startswith("latex/"):
            (tmp_path / Path(name).name).write_bytes(data)
            inputs.append(f"\\begin{{table}}\\centering\\input{{{Path(name).name}}}\\end{{table}}")
    doc = "\\documentclass{article}\\usepackage{booktabs}\\begin{document}" + "\n".join(inputs) + "\\end{document}\n"
    (tmp_path / "doc.tex").write_text(doc)
    out = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def test_cells_stopped_by_the_cpu_time_cap_are_marked():
    rs = grid()
    for r in rs:
        if r["cell"]["method"] == "good" and r["cell"]["toy"] == "toy_a" and r["cell"]["seed"] < 2:
            r["cost"].update(stopped_early=True, steps=40)
    board = build_board(rs)
    assert board.cell("good", "toy_a").capped == [(0, 0), (0, 1)] and board.cell("good", "toy_b").capped == []
    md, out = render_markdown(board), render_all(rs)[1]
    assert "†2" in md and md.count("†") == 2  # the cell and the legend
    rows = list(csv.DictReader(io.StringIO(out["cells.csv"].decode())))
    capped = [(r["toy"], r["method"], r["seed"], r["steps"]) for r in rows if r["stopped_early"] == "1"]
    assert capped == [("toy_a", "good", "0", "40"), ("toy_a", "good", "1", "40")]
    assert 'class="capmark"' in out["index.html"].decode()


def test_leaderboard_refuses_a_folder_it_does_not_own(tmp_path, capsys):
    results = tmp_path / "X" / "results"
    _store(grid()[:8], results)
    mine = tmp_path / "X" / "latex" / "paper.tex"
    mine.parent.mkdir()
    mine.write_text("my own table")
    (tmp_path / "X" / "notes.md").write_text("mine")
    assert main(["leaderboard", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and MARKER in err and "--out" in err
    assert mine.read_text() == "my own table" and not (tmp_path / "X" / "LEADERBOARD.md").exists()
    with pytest.raises(OutputFolderError):
        write_all(tmp_path / "X", render_all(grid()[:8])[1])
    assert sorted(p.name for p in (tmp_path / "X").iterdir()) == ["latex", "notes.md", "results"]
    # a folder holding only the results it reads is fine, and so is a new one
    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path / "new")]) == 0
    shutil.rmtree(tmp_path / "X" / "latex")
    (tmp_path / "X" / "notes.md").unlink()
    assert main(["leaderboard", "--results", str(results)]) == 0
    assert (tmp_path / "X" / MARKER).is_file()


def test_regenerating_deletes_only_files_the_previous_run_wrote(tmp_path):
    out = tmp_path / "board"
    files = render_all(grid())[1]
    write_all(out, files)
    (out / "latex" / "mine.tex").write_text("not generated")  # a user's file inside a generated folder
    (out / "outside.txt").write_text("keep")
    (tmp_path / "elsewhere.txt").write_text("keep")
    (out / "results").mkdir()
    (out / "results" / "seed0.json").write_text("{}")
    # a marker that lists files it did not write (tampered with, or hand-edited) cannot delete them
    (out / MARKER).write_bytes(
        marker_bytes([*files, "../elsewhere.txt", "/etc/hostname", "results/seed0.json"]) + b"latex/gone.tex\n"
    )
    (out / "latex" / "gone.tex").write_text("written by an earlier run")
    fewer = {k: v for k, v in files.items() if k != "latex/tier4.tex"}
    write_all(out, fewer)
    assert not (out / "latex" / "gone.tex").exists() and not (out / "latex" / "tier4.tex").exists()
    assert (out / "latex" / "mine.tex").read_text() == "not generated"
    assert (out / "outside.txt").exists() and (tmp_path / "elsewhere.txt").exists()
    assert (out / "results" / "seed0.json").exists()
    assert read_marker(out) == sorted(fewer)
    assert stale_files(out, fewer) == []
    assert stale_files(out, files) == ["latex/tier4.tex", f"{MARKER} (out of date)"]


def test_the_committed_board_is_ours_to_write():
    """The leaderboard/ package folder carries the marker, listing exactly the artefacts it holds."""
    listed = read_marker(PACKAGE_DIR)
    assert listed is not None and "LEADERBOARD.md" in listed and "index.html" in listed
    assert check_output_folder(PACKAGE_DIR) == listed
    assert all((PACKAGE_DIR / rel).is_file() for rel in listed)


HOSTILE = ["x|y\nz", '=HYPERLINK("http://a")', "<img src=x onerror=alert(1)>", "a\\|b", "+cmd", "@SUM(1)"]


def hostile_grid() -> list[dict]:
    """Hostile strings where a result may still carry them (names are refused before they reach a board:
    ``test_hostile_names_never_reach_a_board``): each as the error message of a failed seed."""
    rs = []
    for i, text in enumerate(HOSTILE):
        method = f"m{i}"
        rs += [fake("toy_a", method, s, 0.5 + 0.01 * i) for s in range(2)]
        rs.append(fake("toy_a", method, 2, None, error=text))
    bad = fake("toy_b", "m0", 0, None, error="line one | forged\n| row |\n<script>alert(1)</script>")
    formula = fake("toy_b", "m1", 0, None, error="x")
    formula["error"]["type"] = '=HYPERLINK("http://a")'  # a forged result's error type starts the CSV cell
    return grid() + rs + [bad, formula]


def test_hostile_names_never_reach_a_board():
    for name in HOSTILE:
        r = fake("toy_a", "m", 0, 0.5)
        r["cell"]["method"] = r["method"]["name"] = name
        with pytest.raises(ResultError, match="neither a valid name"):
            build_board(grid() + [r])


def _md_table_cells(line: str) -> int:
    """The number of cells of a Markdown table row: unescaped pipes minus one."""
    n, i = 0, 0
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        n += line[i] == "|"
        i += 1
    return n - 1


def test_escape_helpers():
    assert md_escape("x|y\nz") == "x\\|y z" and md_escape("<b>") == "&lt;b&gt;" and md_escape("a\\|") == "a\\\\\\|"
    assert csv_cell('=HYPERLINK("a")') == '\'=HYPERLINK("a")' and csv_cell("@x") == "'@x" and csv_cell("\tx") == "'\tx"
    assert csv_cell("-0.5") == "-0.5" and csv_cell("+1e-3") == "+1e-3" and csv_cell("-x") == "'-x" and csv_cell(3) == 3
    assert tex_escape("a_b&c\n%d<e>|") == "a\\_b\\&c \\%d\\textless{}e\\textgreater{}\\textbar{}"
    assert term_escape("a\x1b[31mred\nx|y", 8) == "a [31mr…" and term_escape("x|y") == "x\\|y"


def test_hostile_names_cannot_forge_rows_or_formulas():
    rs = hostile_grid()
    board, files = render_all(rs)
    md = files["LEADERBOARD.md"].decode()
    for block in md.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        if lines:  # every row of every table has the header's number of cells
            assert {_md_table_cells(ln) for ln in lines} == {_md_table_cells(lines[0])}, block
    assert "<img" not in md and "<script" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    for name in ("leaderboard.csv", "cells.csv"):
        rows = list(csv.reader(io.StringIO(files[name].decode())))
        assert len({len(r) for r in rows}) == 1  # no forged columns
        for row in rows:
            for cell in row:
                assert not cell.startswith(("=", "+", "@", "\t", "\r")), (name, cell)
                assert not cell.startswith("-") or float(cell) <= 0, (name, cell)
    cells_rows = list(csv.reader(io.StringIO(files["cells.csv"].decode())))
    assert any(cell.startswith("'=HYPERLINK") for row in cells_rows for cell in row)
    for name, data in files.items():
        if name.startswith("latex/"):
            tex = data.decode()
            body = [ln for ln in tex.splitlines() if ln.endswith("\\\\")]
            assert len({ln.count(" & ") for ln in body}) == 1, name
            assert "<img" not in tex, name
    html = files["index.html"].decode()
    assert "<img src=x" not in html and "<script>alert" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    term = terminal_table(board)
    assert max(len(ln) for ln in term.splitlines()) <= 120 and "\x1b" not in term


def test_terminal_table_fits_120_columns_and_keeps_markdown_rows():
    text = terminal_table(build_board(grid()))
    assert max(len(ln) for ln in text.splitlines()) <= 120
    assert "| oracle (ref)" in text and "| good " in text and "boom: out of patience" in text
    # many long toy names: the tier table is split into several, each repeating rank and method
    long = {f"toy_with_a_rather_long_name_{i}": (1, "exact") for i in range(9)}
    TOYS.update(long)
    try:
        rs = [fake(t, m, s, 0.5) for t in long for m in ("good", "a-method-name-that-goes-on-and-on") for s in range(2)]
    finally:
        for t in long:
            del TOYS[t]
    text = terminal_table(rs)
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) <= 120
    assert sum(ln.startswith("| rank") for ln in lines) >= 3
    assert "toy_with_a_rather_l…" in text  # long names are cut, not wrapped


def test_cpu_seconds_per_success_count_every_run_over_the_successes():
    rs = grid()
    for r in rs:
        r["cost"]["cpu_time_s"] = {"good": 4.0, "meh": 1.0}.get(r["cell"]["method"], 0.0)
    board = build_board(rs)
    rows = {r.method.name: r for r in board.overall.rows}
    good = rows["good"]  # 3 toy models x 3 seeds at 4 CPU-s; successes: the runs at >= 0.9 (all nine)
    assert good.n_success == good.n_runs and good.cpu_per_success_s == pytest.approx(4.0)
    assert rows["meh"].n_success == 0 and rows["meh"].cpu_per_success_s is None  # "never" in the tables
    assert "never" in "\n".join(render_markdown(board).splitlines())


def test_the_pareto_front_keeps_the_points_no_other_beats_on_both_axes():
    from leaderboard.figures import _pareto

    pts = [(1.0, 0.2), (2.0, 0.1), (3.0, 0.5), (0.5, 0.05), (10.0, 0.5), (20.0, 0.9)]
    assert _pareto(pts) == [(0.5, 0.05), (1.0, 0.2), (3.0, 0.5), (20.0, 0.9)]
