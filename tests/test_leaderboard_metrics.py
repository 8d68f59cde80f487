"""Every metric on the leaderboard: metric directions, per-metric tables, ranking robustness (Kendall tau,
order flips), the baseline-normalised score, the papers' metrics' blind spot, the LaTeX cap mark and the
interval precision, on hand-made result records (``fake`` from ``test_leaderboard``)."""

from __future__ import annotations

import csv
import io
import re

import pytest
from test_leaderboard import fake, grid

from benchmark.cli import main
from leaderboard.baseline import baseline_scores
from leaderboard.build import render_all
from leaderboard.data import build_board
from leaderboard.directions import direction
from leaderboard.html_page import render_html
from leaderboard.latex_tables import UnknownMetricError, render_tables
from leaderboard.markdown import render_markdown
from leaderboard.robustness import RANKING_METRICS, Flip, kendall_tau
from leaderboard.terminal import terminal_table


def scored(toy: str, method: str, seed: int, metrics: dict[str, float | None], *, ref: bool = False) -> dict:
    """A result whose metrics are ``metrics`` (the headline ``hungarian`` defaults to 0.5)."""
    r = fake(toy, method, seed, metrics.get("hungarian", 0.5), ref=ref)
    r["metrics"] = {"hungarian": 0.5, **metrics}
    return r


def board_of(per_method: dict[str, dict[str, float | None]], refs: tuple[str, ...] = (), toys=("toy_a",)):
    """A board with one seed per (toy, method): the same metrics on every toy model."""
    return build_board([scored(t, m, 0, v, ref=m in refs) for t in toys for m, v in per_method.items()])


# -- directions and per-metric ranks ---------------------------------------------------------------------------


def test_metric_directions_come_from_the_registry():
    assert direction("ml2r_apd").ideal == 1.0 and direction("ml2r_apd").label == "closer to 1"
    assert direction("faithfulness_error").label == "lower is better"
    assert direction("mmcs").label == "higher is better"
    unknown = direction("not_a_metric_yet")
    assert unknown.higher_is_better and not unknown.known and "assumed" in unknown.label
    assert not direction("os:system").known  # never imported


def test_an_ideal_valued_metric_is_ranked_by_distance_to_the_ideal():
    board = board_of({"x": {"ml2r_apd": 1.05}, "y": {"ml2r_apd": 0.7}, "z": {"ml2r_apd": 1.5}})
    t = board.metrics["ml2r_apd"]
    assert {r.method: r.rank for r in t.rows} == {"x": 1, "y": 2, "z": 3}  # higher-is-better would put z first
    assert t.row("z").key == pytest.approx(0.5)
    md = render_markdown(board)
    assert "### ml2r_apd (closer to 1)" in md and "distance to 1" in md


def test_distance_to_the_ideal_is_taken_per_toy_model():
    """0.5 on one toy model and 1.5 on another average to the ideal 1, but are 0.5 away from it on each."""
    rs = [scored("toy_a", "w", 0, {"ml2r_apd": 0.5}), scored("toy_b", "w", 0, {"ml2r_apd": 1.5})]
    rs += [scored(t, "v", 0, {"ml2r_apd": 0.8}) for t in ("toy_a", "toy_b")]
    t = build_board(rs).metrics["ml2r_apd"]
    assert t.row("w").score.mean == pytest.approx(1.0) and t.row("w").key == pytest.approx(0.5)
    assert t.row("v").rank == 1 and t.row("w").rank == 2


def test_a_lower_is_better_metric_is_ranked_ascending():
    board = board_of({"x": {"faithfulness_error": 0.3}, "y": {"faithfulness_error": 0.1}})
    assert {r.method: r.rank for r in board.metrics["faithfulness_error"].rows} == {"x": 2, "y": 1}


def test_metric_cells_skip_failed_and_na_seeds_but_the_headline_scores_them_zero():
    rs = [scored("toy_a", "m", s, {"hungarian": 0.8, "mmcs": v}) for s, v in enumerate([0.6, None, 0.8])]
    rs.append(fake("toy_a", "m", 3, None, error="boom"))
    board = build_board(rs)
    c = board.metrics["mmcs"].cell("m", "toy_a")
    assert c.values == {(0, 0): 0.6, (0, 2): 0.8} and c.n_na == 1 and c.n_errors == 1 and c.n_seeds == 4
    assert c.score.mean == pytest.approx(0.7)
    h = board.metrics["hungarian"].cell("m", "toy_a")
    assert h.score.mean == pytest.approx(0.6) and h.score.mean == board.cell("m", "toy_a").score.mean


def test_metric_keys_that_are_not_names_get_no_table():
    r = scored("toy_a", "m", 0, {"x|y\n<b>": 0.5, "mmcs": 0.4})
    board = build_board([r])
    assert "x|y\n<b>" not in board.metrics and "mmcs" in board.metrics


# -- ranking robustness -----------------------------------------------------------------------------------------


def test_kendall_tau_on_a_hand_made_three_method_example():
    a = {"m1": 1, "m2": 2, "m3": 3}
    assert kendall_tau(a, a) == pytest.approx(1.0)
    assert kendall_tau(a, {"m1": 3, "m2": 2, "m3": 1}) == pytest.approx(-1.0)
    assert kendall_tau(a, {"m1": 1, "m2": 3, "m3": 2}) == pytest.approx(1 / 3)
    assert kendall_tau(a, {"m1": 1}) is None  # fewer than two shared methods


def test_a_flip_between_two_criteria_is_detected_and_listed():
    board = board_of(
        {
            "a": {"hungarian": 0.9, "mmcs": 0.2, "activity_f1": 0.5},
            "b": {"hungarian": 0.4, "mmcs": 0.8, "activity_f1": 0.5},
            "c": {"hungarian": 0.1, "mmcs": 0.1, "activity_f1": 0.1},
            "ref": {"hungarian": 0.95, "mmcs": 0.95},
        },
        refs=("ref",),
    )
    rob = board.robustness
    assert rob.left_out == ["ref"] and "ref" not in rob.methods
    assert rob.flips == [Flip("a", "b", ("hungarian",), ("mmcs",))]  # tied on activity_f1: no flip there
    assert rob.tau[("hungarian", "mmcs")] == pytest.approx(1 / 3)
    assert rob.tau[("hungarian", "hungarian")] == pytest.approx(1.0)
    md = render_markdown(board)
    assert "`a` / `b`: `a` ahead under `hungarian`; `b` ahead under `mmcs`" in md
    assert "## Ranking robustness" in md and "### Kendall tau-b" in md


def test_the_papers_criterion_uses_mmcs_alone_without_ml2r_and_absent_metrics_are_na():
    board = board_of(
        {
            "p": {"mmcs_apd": 0.9, "ml2r_apd": 1.4},  # ranks 2 and 2
            "q": {"mmcs_apd": 0.8, "ml2r_apd": 1.01},  # ranks 3 and 1
            "r": {"mmcs_apd": 0.95, "ml2r_apd": None},  # claims no faithfulness: mmcs_apd rank 1 alone
        }
    )
    rob = board.robustness
    papers = next(c for c in rob.criteria if c.criterion == "mmcs_apd+ml2r_apd")
    assert papers.score == {"p": 2.0, "q": 2.0, "r": 1.0} and papers.rank == {"r": 1, "p": 2, "q": 2}
    mass = next(c for c in rob.criteria if c.criterion == "mass_f1")
    assert mass.rank == {} and mass.missing == ("mass_f1",)
    assert rob.tau[("mass_f1", "hungarian")] is None
    assert [c.criterion for c in rob.criteria] == list(RANKING_METRICS)
    row = next(ln for ln in render_markdown(board).splitlines() if ln.startswith("| ") and " r " in ln)
    assert "N/A" in row  # mass_f1 column
    assert "robustness.tex" in render_tables(board)


# -- the baseline-normalised score --------------------------------------------------------------------------------


def test_normalised_score_on_a_hand_case():
    means = {("m", "t1"): 0.75, ("r", "t1"): 0.5, ("s", "t1"): 0.2, ("m", "t2"): 0.9, ("r", "t2"): 1.0}
    scores = baseline_scores(means, ["m", "r"], ["r", "s"], ["t1", "t2"])
    m = scores["m"]
    assert m.normalised == pytest.approx((0.75 - 0.5) / (1 - 0.5))  # t2: b = 1, N/A, left out of the mean
    assert (m.beats, m.of) == (1, 2)
    assert scores["r"].normalised == pytest.approx(0.0)
    # a reference row at 0.9993 leaves no headroom: N/A rather than (0.6 - 0.9993) / 0.0007 = -570
    near = baseline_scores({("m", "t"): 0.6, ("r", "t"): 0.9993}, ["m"], ["r"], ["t"])["m"]
    assert near.normalised is None and (near.beats, near.of) == (0, 1)


def test_the_overall_table_shows_normalised_score_and_beats_all_refs():
    rs = []
    for s in range(2):
        for toy, good in (("toy_a", 0.75), ("toy_b", 0.4)):
            rs.append(fake(toy, "good", s, good))
            rs.append(fake(toy, "random", s, 0.5, ref=True))
            rs.append(fake(toy, "oracle", s, 1.0, ref=True))  # sees the ground truth: not the bar
    board = build_board(rs)
    good = next(r for r in board.overall.rows if r.method.name == "good")
    assert good.baseline.normalised == pytest.approx((0.5 + (-0.2)) / 2) and good.baseline.beats == 1
    header = next(ln for ln in render_markdown(board).splitlines() if ln.startswith("| rank"))
    assert "vs refs" in header and "beats refs" in header
    line = next(ln for ln in render_markdown(board).splitlines() if "| good " in ln)
    assert "+0.150" in line and "1/2" in line
    rows = list(csv.DictReader(io.StringIO(render_all(rs)[1]["leaderboard.csv"].decode())))
    g = next(r for r in rows if r["table"] == "overall" and r["method"] == "good")
    assert float(g["vs_refs"]) == pytest.approx(0.15) and g["beats_refs"] == "1" and g["beats_refs_of"] == "2"


# -- the papers' metrics' blind spot --------------------------------------------------------------------------------


def test_whole_is_shown_beside_the_papers_metrics():
    board = board_of(
        {
            "whole": {"mmcs_apd": 1.0, "ml2r_apd": 1.0},
            "m": {"mmcs_apd": 0.8, "ml2r_apd": 0.9},
        },
        refs=("whole",),
        toys=("toy_a", "toy_b"),
    )
    md = render_markdown(board)
    line = (
        "`whole` (one component = all weights) scores 1.000 here (1.000 on 2 of 2 toy models): "
        "this metric cannot see merges."
    )
    assert md.count(line) == 2  # under mmcs_apd and ml2r_apd
    assert "scores `mmcs_apd` 1.000 (1.000 on 2 of 2 toy models) and `ml2r_apd` 1.000" in md  # robustness
    html = render_html(board)
    assert "this metric cannot see merges" in html and "these metrics cannot see merges" in html
    tex = render_tables(board, "mmcs_apd")["overall.tex"]
    assert "% whole (one component = all weights) scores 1.000 here" in tex


# -- every metric on every page -------------------------------------------------------------------------------------


def test_every_metric_reaches_markdown_html_csv_and_latex():
    _, files = render_all(grid())
    md = files["LEADERBOARD.md"].decode()
    assert "## Scores by metric" in md and "### mmcs (higher is better)" in md
    html = files["index.html"].decode()
    assert '<select id="metric" data-default="hungarian">' in html
    assert '<option value="mmcs">mmcs</option>' in html and 'data-metric="mmcs"' in html
    rows = list(csv.DictReader(io.StringIO(files["metrics.csv"].decode())))
    cell = next(
        r for r in rows if (r["metric"], r["scope"], r["toy"], r["method"]) == ("mmcs", "cell", "toy_a", "good")
    )
    assert float(cell["mean"]) == pytest.approx((0.95 + 0.92 + 0.97) / 3) and cell["ci_low"] and cell["ci_high"]
    assert {r["metric"] for r in rows} == {"hungarian", "mmcs"}
    n_cells = len(build_board(grid()).cells)
    assert sum(r["scope"] == "cell" for r in rows) == 2 * n_cells  # one row per (toy, method, metric)
    rob = list(csv.DictReader(io.StringIO(files["robustness.csv"].decode())))
    assert {r["kind"] for r in rob} >= {"rank", "mean_rank", "tau"}


def test_latex_renders_any_metric_and_refuses_an_unknown_one(tmp_path, capsys):
    rs = [
        scored(t, m, s, {"faithfulness_error": v})
        for t in ("toy_a", "toy_b")
        for m, v in (("x", 0.3), ("y", 0.1))
        for s in range(2)
    ]
    board = build_board(rs)
    tex = render_tables(board, "faithfulness_error")
    assert "faithfulness\\_error (lower is better)" in tex["overall.tex"]
    first = next(ln for ln in tex["overall.tex"].splitlines() if ln.startswith("1 & "))
    assert first.startswith("1 & y & $0.100$")
    assert set(tex) == {"overall.tex", "tier0.tex", "tier1.tex", "robustness.tex"}
    with pytest.raises(UnknownMetricError, match="not in these results"):
        render_tables(board, "nope")
    from test_leaderboard import _store

    results = tmp_path / "b" / "results"
    _store(rs, results)
    assert main(["leaderboard", "--results", str(results), "--metric", "faithfulness_error"]) == 0
    assert "faithfulness\\_error" in (tmp_path / "b" / "latex" / "overall.tex").read_text()
    assert main(["leaderboard", "--results", str(results), "--metric", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


# -- fixes: the LaTeX cap mark and the interval precision ------------------------------------------------------------


def test_latex_marks_capped_cells_with_a_double_dagger_and_a_legend_line():
    rs = grid()
    for r in rs:
        if r["cell"]["method"] == "good" and r["cell"]["toy"] == "toy_a" and r["cell"]["seed"] < 2:
            r["cost"].update(stopped_early=True, steps=40)
    tex = render_all(rs)[1]["latex/tier0.tex"].decode()
    good = next(ln for ln in tex.splitlines() if ln.startswith(("1 & good", "1--2 & good")) or " & good & " in ln)
    assert "$\\ddagger2$" in good and "†" not in tex
    assert any(
        ln.startswith("% Legend:") and "\\ddagger k$ k seeds stopped by the CPU-time cap" in ln
        for ln in tex.splitlines()
    )


def test_intervals_are_printed_at_the_means_precision_everywhere():
    rs = [fake("toy_a", "m", s, v) for s, v in enumerate([0.995, 0.996, 0.997])]
    board = build_board(rs)
    c = board.cell("m", "toy_a").score
    want = f"0.996 [{c.low:.3f}, {c.high:.3f}]"
    assert c.low < 0.996 < c.high
    assert want in render_markdown(board) and want in terminal_table(board)
    assert f'0.996 <span class="ci">[{c.low:.3f}, {c.high:.3f}]</span>' in render_html(board)
    assert f"$0.996$ {{\\scriptsize $[{c.low:.3f}, {c.high:.3f}]$}}" in render_tables(board)["tier0.tex"]
    for text in (render_markdown(board), render_html(board), render_tables(board)["overall.tex"]):
        assert not re.search(r"\d\.\d{3}\D{0,40}\[\d\.\d{2}\b(?!\d)", text)  # no 2-decimal interval after a mean
