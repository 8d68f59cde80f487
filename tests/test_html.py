"""The static HTML leaderboard rendered in headless Chromium: sorting and filtering through the page address,
checked on the DOM the browser produces after its script ran."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_leaderboard import grid

from leaderboard.data import build_board
from leaderboard.html_page import render_html

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it where apt works)",
)


class Tables(HTMLParser):
    """Rows of every ``table.lb``: (method, hidden, [data-v of each cell], [text of each cell]), header aria-sort."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict]] = {}
        self.sorted_by: dict[str, tuple[int, str]] = {}
        self.body_attrs: dict[str, str | None] = {}
        self.counts: dict[str, str] = {}
        self.sections: dict[str, tuple[str | None, bool]] = {}  # id -> (data-metric, hidden)
        self._table: str | None = None
        self._section: str | None = None
        self._row: dict | None = None
        self._th = -1
        self._in_td = False
        self._in_count = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body_attrs = a
        elif tag == "section":
            self._section = a.get("id")
            self.sections[a["id"]] = (a.get("data-metric"), "hidden" in a)
        elif tag == "span" and a.get("class") == "count":
            self._in_count = True
        elif tag == "table" and a.get("class") == "lb":
            self._table = a["id"][2:]
            self.tables[self._table] = []
            self._th = -1
        elif tag == "th" and self._table:
            self._th += 1
            if a.get("aria-sort"):
                self.sorted_by[self._table] = (self._th, a["aria-sort"])
        elif tag == "tr" and self._table and "data-method" in a:
            self._row = {"method": a["data-method"], "hidden": "hidden" in a, "v": [], "text": []}
            self.tables[self._table].append(self._row)
        elif tag == "td" and self._row is not None:
            self._row["v"].append(a.get("data-v"))
            self._row["text"].append("")
            self._in_td = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_td = False
        elif tag == "tr":
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "span":
            self._in_count = False

    def handle_data(self, data: str) -> None:
        if self._in_td and self._row is not None:
            self._row["text"][-1] += data
        if self._in_count and self._section:
            self.counts[self._section] = self.counts.get(self._section, "") + data


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("html") / "index.html"
    path.write_text(render_html(build_board(grid())))
    return path


def render(page: Path, fragment: str, tmp_path: Path) -> Tables:
    cmd = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--dump-dom",
        f"{page.as_uri()}#{fragment}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "<table" in out.stdout, out.stderr[-2000:]
    parsed = Tables()
    parsed.feed(out.stdout)
    assert parsed.body_attrs.get("data-ready") == "1", "the page's script did not run"
    return parsed


def static(page: Path) -> Tables:
    parsed = Tables()
    parsed.feed(page.read_text())
    return parsed


def test_sorting_a_numeric_column_reorders_the_rendered_rows(page, tmp_path):
    before = [r["method"] for r in static(page).tables["overall"]]
    dom = render(page, "sort=overall.2.asc", tmp_path)
    rows = dom.tables["overall"]
    scores = [float(r["v"][2]) for r in rows]
    assert scores == sorted(scores) and len(rows) == len(before)
    assert [r["method"] for r in rows] == list(reversed(before))  # the page ships sorted best first
    assert dom.sorted_by["overall"] == (2, "ascending")
    assert rows[0]["method"] == "random" and rows[-1]["method"] == "oracle"
    assert rows[-1]["text"][2].startswith("1.000")
    # the other tables keep their order
    assert [r["method"] for r in dom.tables["tier1"]] == [r["method"] for r in static(page).tables["tier1"]]


def test_sorting_a_text_column_and_a_column_with_failures(page, tmp_path):
    dom = render(page, "sort=tier1.2.desc", tmp_path)  # column 2 is toy_b, where "meh" has a failed seed
    rows = dom.tables["tier1"]
    values = [float(r["v"][2]) for r in rows]
    assert values == sorted(values, reverse=True)
    assert [r["method"] for r in rows] == ["oracle", "good", "meh", "random"]
    meh = next(r for r in rows if r["method"] == "meh")
    assert "✗1/3" in meh["text"][2]
    dom = render(page, "sort=tier0.1.asc", tmp_path)
    assert [r["method"] for r in dom.tables["tier0"]] == ["good", "meh", "oracle", "random"]


def test_filtering_by_name_and_hiding_reference_rows(page, tmp_path):
    dom = render(page, "q=o&refs=0&table=overall", tmp_path)
    shown = [r["method"] for r in dom.tables["overall"] if not r["hidden"]]
    assert shown == ["good"]  # "oracle" matches "o" but is a reference row; "meh" and "random" do not match
    assert dom.counts["overall"] == "1 of 4 methods shown"
    dom = render(page, "errs=1", tmp_path)
    assert [r["method"] for r in dom.tables["tier1"] if not r["hidden"]] == ["meh"]


def _shown(dom: Tables) -> list[str]:
    return [k for k, (_, hidden) in dom.sections.items() if not hidden]


def test_the_metric_selector_switches_the_per_metric_table(page, tmp_path):
    metrics = {k: m for k, (m, _) in static(page).sections.items() if m is not None}
    assert sorted(metrics.values()) == ["hungarian", "mmcs"]
    dom = render(page, "", tmp_path)  # the headline's table by default, beside every other table
    assert [metrics[k] for k in _shown(dom) if k in metrics] == ["hungarian"] and "overall" in _shown(dom)
    dom = render(page, "metric=mmcs&table=metrics", tmp_path)
    assert [metrics.get(k, k) for k in _shown(dom)] == ["mmcs"]
    mmcs = next(k for k, m in metrics.items() if m == "mmcs")
    dom = render(page, f"metric=mmcs&table=metrics&sort={mmcs}.2.asc&refs=0", tmp_path)
    rows = [r for r in dom.tables[mmcs] if not r["hidden"]]
    assert [r["method"] for r in rows] == ["meh", "good"] and dom.counts[mmcs] == "2 of 4 methods shown"
    dom = render(page, "metric=no-such-metric&table=metrics", tmp_path)  # falls back to the headline
    assert [metrics.get(k, k) for k in _shown(dom)] == ["hungarian"]


def test_the_robustness_table_is_rendered_and_sortable(page, tmp_path):
    rows = static(page).tables["robustness"]
    assert [r["method"] for r in rows] == ["good", "meh"] and rows[0]["text"][2].startswith("1 (")
    dom = render(page, "sort=robustness.0.desc&table=robustness", tmp_path)
    assert [r["method"] for r in dom.tables["robustness"]] == ["meh", "good"] and _shown(dom) == ["robustness"]
