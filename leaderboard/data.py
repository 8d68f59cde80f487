"""From stored result records to the numbers every leaderboard output shows.

One :class:`Board` is built from the result files alone and rendered by every writer (Markdown, LaTeX,
CSV, HTML, figures), so the outputs can never disagree. Conventions (docs/design.md, Statistics and the leaderboard):

- A cell is (toy model, method); its values are the headline score of each seed.
- A failed seed (status ``error``) or an N/A headline scores 0 (a run that crashed recovered nothing),
  counts as a failure in the success rate, and is marked in every output; it is never dropped.
- Means carry a 95% bootstrap interval over seeds (:func:`leaderboard.stats.bootstrap_ci`), success rates a
  Wilson interval, and ranks a paired-bootstrap rank band (:func:`leaderboard.stats.rank_bands`).
- A tier's score for a method is the mean over the tier's toy models of the mean over seeds; its interval
  is the bootstrap interval of the per-seed averages over the tier's toy models (seeds are paired).
- The overall table leaves out toy models whose ground truth is ``contested`` (tier 4); their tier table
  still shows them.
- Reference rows (oracle, random, whole, pca, ...: ``reference_row`` in the result) are shown and marked,
  but only submitted methods are ranked.
- Every metric the results hold gets a :class:`~leaderboard.metric_scores.MetricTable` (``Board.metrics``),
  the ranking criteria a :class:`~leaderboard.robustness.Robustness`, and the overall rows a
  :class:`~leaderboard.baseline.BaselineScore` (the headline against the reference rows).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from benchmark import heldout
from benchmark.names import NAME_PATTERN
from benchmark.results import ResultRecord, as_records
from leaderboard import stats
from leaderboard.baseline import BaselineScore, baseline_scores
from leaderboard.metric_scores import MetricCell, MetricTable, metric_table, record_cells
from leaderboard.robustness import RANKING_METRICS, Robustness, robustness
from leaderboard.stats import Stat

CONFIDENCE = 0.95
OVERALL = "overall"
MIN_GAP = 0.05  # the smallest public/held-out gap the board flags (beside non-overlapping intervals)
# the first present one is ranked; "budget": headline toy models run under a CPU-time cap (never the headline)
TRACKS = ("headline", "held-out", "budget", "reproduction", "diagnostic")
Replicate = tuple[int, int]  # (toy instance, method seed): ResultRecord.replicate


def replicate_label(r: Replicate) -> str:
    """How an output names a replicate: its seed, and its toy instance where that is not 0."""
    return f"{r[1]}" if r[0] == 0 else f"{r[1]} (instance {r[0]})"


@dataclass(frozen=True)
class ToyInfo:
    name: str  # the toy model (its instances, "name@k", are replicates of one board cell)
    tier: int
    gt_status: str
    version: str
    weights_sha256: str  # instance 0's (or the first instance's) weights
    track: str = "reproduction"

    @property
    def contested(self) -> bool:
        return self.gt_status == "contested"


@dataclass(frozen=True)
class MethodInfo:
    name: str
    version: str
    paper: str
    reference_row: bool
    sees_ground_truth: bool


@dataclass
class Cell:
    """One (toy model, method): the headline score of every replicate, a (toy instance, method seed) pair."""

    toy: str
    method: str
    values: dict[Replicate, float]  # replicate -> headline (0.0 for a failed run)
    errors: dict[Replicate, str]  # replicate -> "Type: message" of a failed run
    na: list[Replicate]  # replicates whose run succeeded but whose headline is N/A
    score: Stat
    success: Stat
    n_success: int
    wall_time_s: float | None  # median over the seeds that ran
    capped: list[Replicate] = field(default_factory=list)  # runs stopped early by the budget's CPU-time cap
    cpu_time_s: float = 0.0  # the CPU seconds of all its runs, failed ones included
    unconverged: list[Replicate] = field(default_factory=list)  # runs whose loss was still falling at the end

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def cpu_per_success_s(self) -> float | None:
        """CPU seconds of all its runs over its successful runs (None: no success)."""
        return self.cpu_time_s / self.n_success if self.n_success else None

    @property
    def all_failed(self) -> bool:
        return bool(self.values) and len(self.errors) == len(self.values)


@dataclass
class Row:
    """One method in one table (a tier, or the overall table)."""

    method: MethodInfo
    score: Stat
    success: Stat
    n_success: int
    n_runs: int
    n_errors: int
    complete: bool  # the method has a result for every toy model of the table
    rank: tuple[float, int, int] | None = None  # (mean rank, best, worst); None for reference rows
    wall_time_s: float | None = None
    # CPU seconds spent per successful run: all the row's runs' CPU time over its successes (None: no success)
    cpu_per_success_s: float | None = None
    by_tier: dict[int, Stat] = field(default_factory=dict)  # overall table only
    baseline: BaselineScore | None = None  # overall table only


@dataclass
class Table:
    key: str  # "overall", "tier<k>" (the ranked track's tiers) or "<track>-tier<k>"
    title: str
    toys: list[ToyInfo]
    rows: list[Row]
    note: str = ""
    track: str = "reproduction"

    @property
    def tier(self) -> int | None:
        """The tier this table shows; None for an overall table (the ranked track's, or another track's)."""
        return int(self.key.rsplit("tier", 1)[1]) if "tier" in self.key else None


@dataclass
class Board:
    headline: str
    toys: list[ToyInfo]
    methods: list[MethodInfo]
    cells: dict[tuple[str, str], Cell]  # (method, toy) -> cell
    overall: Table
    tiers: list[Table]
    problems: list[str] = field(default_factory=list)
    metrics: dict[str, MetricTable] = field(default_factory=dict)  # the headline first
    robustness: Robustness | None = None
    heldout: list[HeldOutGap] = field(default_factory=list)  # public vs held-out headline scores

    def cell(self, method: str, toy: str) -> Cell | None:
        return self.cells.get((method, toy))

    def method(self, name: str) -> MethodInfo | None:
        return next((m for m in self.methods if m.name == name), None)


class BoardError(ValueError):
    """Results that cannot be put on one leaderboard (mixed headlines, conflicting toy builds, ...)."""


def _ci(values: Sequence[float]) -> Stat:
    return stats.mean_ci(values, confidence=CONFIDENCE)


def _success(values: Sequence[float]) -> tuple[Stat, int]:
    k = sum(stats.is_success(v) for v in values)
    low, high = stats.wilson_interval(k, len(values), CONFIDENCE)
    return Stat(k / len(values), low, high), k


def _headline_value(r: ResultRecord) -> float | None:
    v = r.headline_value
    return v if v is not None and math.isfinite(v) else None


TRACK_SUFFIX = {"held-out": "held-out", "budget": "capped"}  # tracks whose toy models get their own rows


def board_track(r: ResultRecord) -> str:
    """The track a result counts on: its toy model's, except that a run on a headline toy model under a
    CPU-time cap is on the budget track (a capped run never enters the headline; ``--suite budget``), and
    one on a held-out instance is on the held-out track."""
    if r.toy.track == "headline" and (r.budget or {}).get("seconds") is not None:
        return "budget"
    return "held-out" if heldout.is_heldout(r.replicate[0]) else r.toy.track


def _collect(
    results: Iterable[ResultRecord],
) -> tuple[str, dict[str, ToyInfo], dict[str, MethodInfo], dict[tuple[str, str], list[ResultRecord]]]:
    toys: dict[str, ToyInfo] = {}
    methods: dict[str, MethodInfo] = {}
    grouped: dict[tuple[str, str], list[ResultRecord]] = defaultdict(list)
    instance_of: dict[str, int] = {}  # toy model -> the instance its ToyInfo describes
    headlines = set()
    budgets: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    builds: dict[str, tuple[str, str]] = {}  # toy instance -> (version, weights)
    for r in results:
        toy, method = r.family, r.cell.method
        track = board_track(r)
        if track in TRACK_SUFFIX:  # its own toy model on the board: e.g. public and held-out side by side
            toy = f"{toy} ({TRACK_SUFFIX[track]})"
        headlines.add(r.headline)
        grouped[(method, toy)].append(r)
        m = r.method
        if r.ok:
            for key in ("version", "reference_row"):
                if getattr(m, key) is None:
                    raise BoardError(
                        f"{r.cell}: the result records no method {key}, so it cannot be placed on the board "
                        "(pdbench validate says why)"
                    )
            run_as = json.dumps({"budget": r.budget, "overrides": m.overrides}, sort_keys=True)
            budgets[(method, track)][run_as].append(f"{r.cell.toy} seed {r.cell.seed}")
        t = r.toy
        if t.tier is not None:  # error rows from a toy that failed to load carry only its name
            build = (str(t.version or "?"), str(t.weights_sha256 or "?"))
            old_build = builds.setdefault(r.cell.toy, build)
            if old_build != build:
                raise BoardError(
                    f"toy model {r.cell.toy!r} appears with two builds (version {old_build[0]}, weights "
                    f"{old_build[1][:12]} vs version {build[0]}, weights {build[1][:12]}); re-run the stale cells"
                )
            if r.replicate[0] < instance_of.get(toy, 1 << 30):
                toys[toy] = ToyInfo(toy, t.tier, str(t.gt_status or "?"), *build, track=track)
                instance_of[toy] = r.replicate[0]
        if m.version is not None:
            info_m = MethodInfo(method, m.version, m.paper, bool(m.reference_row), bool(m.sees_ground_truth))
            old_m = methods.get(method)
            if old_m is not None and old_m.version != info_m.version:
                raise BoardError(
                    f"method {method!r} appears with versions {old_m.version} and {info_m.version}; "
                    "re-run the stale cells"
                )
            methods[method] = info_m
    for (method, track), by_budget in sorted(budgets.items()):
        if len(by_budget) > 1:
            described = "; ".join(f"{b} on {len(c)} cell(s), e.g. {c[0]}" for b, c in sorted(by_budget.items()))
            raise BoardError(
                f"method {method!r} ran under {len(by_budget)} different budgets or hyperparameter overrides on "
                f"the {track} track ({described}); one board compares one budget per method and track: re-run "
                "the odd cells or use separate results folders"
            )
    if len(headlines) > 1:
        raise BoardError(f"the results use different headline metrics {sorted(headlines)}; re-run the stale cells")
    for method, toy in grouped:
        if toy not in toys:
            toys[toy] = ToyInfo(toy, 99, "?", "?", "?")
        if method not in methods:
            methods[method] = MethodInfo(method, "?", "", False, False)
    return (headlines.pop() if headlines else "hungarian"), toys, methods, grouped


def _cell(method: str, toy: str, rs: list[ResultRecord]) -> Cell:
    values: dict[Replicate, float] = {}
    errors: dict[Replicate, str] = {}
    na: list[Replicate] = []
    capped: list[Replicate] = []
    unconverged: list[Replicate] = []
    walls = []
    cpu = 0.0
    for r in sorted(rs, key=lambda r: r.replicate):
        seed = r.replicate
        cpu += float(r.cost.get("cpu_time_s") or 0.0)
        if not r.ok:
            errors[seed] = r.error.summary_full if r.error else "Error"
            values[seed] = 0.0
            continue
        v = _headline_value(r)
        if v is None:
            na.append(seed)
        values[seed] = 0.0 if v is None else v
        if r.stopped_early:
            capped.append(seed)
        if r.cost.get("converged") is False:
            unconverged.append(seed)
        wall = r.cost.get("wall_time_s")
        if isinstance(wall, int | float):
            walls.append(float(wall))
    vals = list(values.values())
    success, k = _success(vals)
    return Cell(
        toy,
        method,
        values,
        errors,
        na,
        _ci(vals),
        success,
        k,
        statistics.median(walls) if walls else None,
        capped,
        cpu,
        unconverged,
    )


def _row(method: MethodInfo, toys: list[ToyInfo], cells: dict[tuple[str, str], Cell]) -> Row | None:
    mine = [cells[(method.name, t.name)] for t in toys if (method.name, t.name) in cells]
    if not mine:
        return None
    seeds = set.intersection(*(set(c.values) for c in mine))
    if seeds:  # paired over seeds: one average over the table's toy models per seed
        per_seed = [statistics.fmean(c.values[s] for c in mine) for s in sorted(seeds)]
        score = _ci(per_seed)
        score.mean = statistics.fmean(c.score.mean for c in mine if c.score.mean is not None)
        score.low, score.high = min(score.low, score.mean), max(score.high, score.mean)
    else:
        score = Stat(statistics.fmean(c.score.mean for c in mine if c.score.mean is not None))
    all_vals = [v for c in mine for v in c.values.values()]
    success, k = _success(all_vals)
    walls = [c.wall_time_s for c in mine if c.wall_time_s is not None]
    return Row(
        method,
        score,
        success,
        k,
        len(all_vals),
        sum(len(c.errors) for c in mine),
        len(mine) == len(toys),
        wall_time_s=statistics.fmean(walls) if walls else None,
        cpu_per_success_s=sum(c.cpu_time_s for c in mine) / k if k else None,
    )


def _rank(rows: list[Row], toys: list[ToyInfo], cells: dict[tuple[str, str], Cell]) -> None:
    ranked = [r for r in rows if not r.method.reference_row and r.complete]
    if not ranked:
        return
    scores = {
        r.method.name: {(t.name, s): v for t in toys for s, v in cells[(r.method.name, t.name)].values.items()}
        for r in ranked
    }
    try:
        bands = stats.rank_bands(scores, confidence=CONFIDENCE)
    except ValueError:  # no (toy, seed) cell shared by every method: no paired ranks
        return
    for r in ranked:
        r.rank = bands[r.method.name]


def _order(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (-(r.score.mean if r.score.mean is not None else -1.0), r.method.name))


def _table(
    key: str,
    title: str,
    toys: list[ToyInfo],
    methods: list[MethodInfo],
    cells: dict[tuple[str, str], Cell],
    note: str = "",
    track: str = "reproduction",
) -> Table:
    rows = [r for m in methods if (r := _row(m, toys, cells)) is not None]
    _rank(rows, toys, cells)
    return Table(key, title, toys, _order(rows), note, track)


TIER_NAMES = {
    0: "exact by construction",
    1: "superposition",
    2: "superposition with extra structure",
    3: "higher-rank circuits",
    4: "contested ground truth",
    5: "transformers",
}


TRACK_TITLES = {
    "headline": "Headline",
    "held-out": "Held-out",
    "budget": "Capped (budget)",
    "reproduction": "Reproduction",
    "diagnostic": "Diagnostic",
}


@dataclass
class HeldOutGap:
    """A method's score on the public headline instances and on held-out ones (``benchmark.heldout``)."""

    method: MethodInfo
    public: Stat
    heldout: Stat

    @property
    def gap(self) -> float | None:
        if self.public.mean is None or self.heldout.mean is None:
            return None
        return self.public.mean - self.heldout.mean

    @property
    def flagged(self) -> bool:
        """The intervals do not overlap and the gap is at least ``MIN_GAP``: the method does better (or worse)
        on the instances it could have seen. Three instances give narrow intervals for a deterministic
        method, so a gap of a few thousandths alone is instance noise, not overfitting."""
        p, h = self.public, self.heldout
        if None in (p.low, p.high, h.low, h.high) or self.gap is None or abs(self.gap) < MIN_GAP:
            return False
        return p.low > h.high or h.low > p.high  # type: ignore[operator]


def heldout_gaps(overall: Table, toys: list[ToyInfo], methods: list[MethodInfo], cells: dict) -> list[HeldOutGap]:
    """Each overall row beside its score on the held-out instances of the same toy models (empty when the
    results hold no held-out run or the overall table is not the headline's)."""
    held = [t for t in toys if t.track == "held-out" and not t.contested]
    if not held or overall.track != "headline":
        return []
    table = _table("held-out", "held-out", held, methods, cells, track="held-out")
    by_name = {r.method.name: r for r in table.rows}
    return [
        HeldOutGap(r.method, r.score, by_name[r.method.name].score) for r in overall.rows if r.method.name in by_name
    ]


def _track_tables(
    track: str, toys: list[ToyInfo], methods: list[MethodInfo], cells: dict[tuple[str, str], Cell], ranked: bool
) -> list[Table]:
    """One table per tier of ``track``'s toy models, titled with the track; keyed ``tier<k>`` on the ranked
    track, ``<track>-tier<k>`` on the others."""
    out = []
    for tier in sorted({t.tier for t in toys}):
        tt = [t for t in toys if t.tier == tier]
        note = (
            "ground truth contested: shown here, left out of the overall table" if all(t.contested for t in tt) else ""
        )
        title = f"{TRACK_TITLES.get(track, track)} track, tier {tier}: {TIER_NAMES.get(tier, '')}".rstrip(": ")
        out.append(_table(f"tier{tier}" if ranked else f"{track}-tier{tier}", title, tt, methods, cells, note, track))
    return out


def _track_order(track: str) -> int:
    return TRACKS.index(track) if track in TRACKS else len(TRACKS)


def build_board(results: Iterable[ResultRecord], problems: Sequence[str] = ()) -> Board:
    """Every number the leaderboard shows, from validated result records (``benchmark.results.load_results``).

    The overall table, its rank bands and success rates come from the headline track's toy models (issue
    "toy ladder v2"); the reproduction and diagnostic tracks get their own tables. Results with no headline
    toy model (a quick run) rank on the reproduction track, and the overall table says so."""
    results = as_records(results)
    headline, toys_by_name, methods_by_name, grouped = _collect(results)
    if not grouped:
        raise BoardError("no results to put on a leaderboard")
    toys = sorted(toys_by_name.values(), key=lambda t: (_track_order(t.track), t.tier, t.name))
    methods = sorted(methods_by_name.values(), key=lambda m: m.name)
    cells = {key: _cell(key[0], key[1], rs) for key, rs in sorted(grouped.items())}
    ranked_track = toys[0].track
    tracks = sorted({t.track for t in toys}, key=_track_order)
    tiers = []
    for tr in tracks:
        theirs = [t for t in toys if t.track == tr]
        if tr != ranked_track and len({t.tier for t in theirs}) > 1:  # another track's own overall table
            table = _table(
                f"{tr}-all",
                f"{TRACK_TITLES.get(tr, tr)} track: all its toy models (ranked among themselves)",
                [t for t in theirs if not t.contested],
                methods,
                cells,
                "not the overall ranking; the papers' own toys, where each adapter shows it is faithful; tuned: apd, "
                "l3d, spd, spd-main and vpd run their papers' per-model settings where one exists (docs/protocol.md)"
                if tr == "reproduction"
                else "",
                tr,
            )
            tiers.append(table)
        tiers += _track_tables(tr, theirs, methods, cells, tr == ranked_track)
    mine = [t for t in toys if t.track == ranked_track]
    core = [t for t in mine if not t.contested]
    left_out = [f"{len(mine) - len(core)} toy model(s) with contested ground truth"] if len(core) < len(mine) else []
    others = len(toys) - len(mine)
    if others:
        left_out.append(f"{others} toy model(s) of other tracks (their own tables below)")
    overall = _table(
        OVERALL,
        f"Overall: {TRACK_TITLES.get(ranked_track, ranked_track).lower()} track (toy models with exact or strong "
        "ground truth)",
        core,
        methods,
        cells,
        "leaves out " + " and ".join(left_out) if left_out else "",
        ranked_track,
    )
    for row in overall.rows:
        for tier in tiers:
            if tier.track != ranked_track:
                continue
            match = next((r for r in tier.rows if r.method.name == row.method.name), None)
            if match is not None and not all(t.contested for t in tier.toys):
                row.by_tier[int(tier.tier or 0)] = match.score
    _add_baseline(overall, methods, cells)
    tables = metric_tables(headline, results, toys, methods, cells, core)
    refs = {m.name: m.reference_row for m in methods}
    board = Board(headline, toys, methods, cells, overall, tiers, list(problems), tables, robustness(tables, refs))
    board.heldout = heldout_gaps(overall, toys, methods, cells)
    return board


def _add_baseline(overall: Table, methods: list[MethodInfo], cells: dict[tuple[str, str], Cell]) -> None:
    """Each overall row's headline against the reference rows that do not see the ground truth."""
    toys = [t.name for t in overall.toys]
    means = {k: c.score.mean for k, c in cells.items() if c.score.mean is not None}
    refs = [m.name for m in methods if m.reference_row and not m.sees_ground_truth]
    scores = baseline_scores(means, [r.method.name for r in overall.rows], refs, toys)
    for row in overall.rows:
        row.baseline = scores[row.method.name]


def metric_tables(
    headline: str,
    records: Sequence[ResultRecord],
    toys: list[ToyInfo],
    methods: list[MethodInfo],
    cells: dict[tuple[str, str], Cell],
    core: Sequence[ToyInfo],
) -> dict[str, MetricTable]:
    """A :class:`MetricTable` per metric in the results: the headline (its cells are the board's), then the
    ranking criteria's metrics, then the others by name. Keys that are not valid metric names (a forged
    result) get no table; ``cells.csv`` still lists them."""
    present = {k for r in records if r.ok for k in r.metrics if NAME_PATTERN.fullmatch(k)} - {headline}
    wanted = [p.strip() for c in RANKING_METRICS for p in c.split("+")]
    names = [headline, *dict.fromkeys(n for n in wanted if n in present), *sorted(present - set(wanted))]
    refs = {m.name: m.reference_row for m in methods}
    all_toys, core_names = [t.name for t in toys], [t.name for t in core]
    out = {}
    for name in names:
        if name == headline:
            mc = {k: MetricCell(c.values, c.n, len(c.na), len(c.errors), c.score) for k, c in cells.items()}
        else:
            mc = record_cells(records, name)
        out[name] = metric_table(name, mc, refs, all_toys, core_names)
    return out


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def fmt_rank(rank: tuple[float, int, int] | None) -> str:
    if rank is None:
        return ""
    _, lo, hi = rank
    return f"{lo}" if lo == hi else f"{lo}-{hi}"
