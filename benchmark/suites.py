"""Named suites of cells: which toy models, methods and seeds a run covers, and each method's budget.

A suite's budget is the same for every method unless ``method_budgets`` names one; the budget a cell ran
under is recorded in its result (``budget``), so a leaderboard compares methods at known compute.
Budgets are counted in steps (``scale`` multiplies each method's default number of steps), which keeps a
cell's result independent of the machine's speed. The ``full`` suite adds a soft cap of
``CELL_CPU_CAP_S`` CPU seconds per cell so that the whole grid runs on 2 CPU cores in about an hour: a run
that reaches it stops early, its result says so (``cost.stopped_early``) and records the steps it took.
Only such capped cells depend on the machine's speed; ``paper`` is the same grid without the cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmark import heldout
from benchmark.budget import Budget
from benchmark.registry import METHODS, TOY_MODELS
from benchmark.results import Cell


@dataclass(frozen=True)
class Suite:
    name: str
    max_tier: int
    seeds: tuple[int, ...]
    budget: Budget
    description: str
    method_budgets: dict[str, Budget] = field(default_factory=dict)
    min_tier: int = 0
    skip_tiers: tuple[int, ...] = ()  # tiers in min_tier..max_tier that the suite leaves out
    track: str = "reproduction"  # the toy models' track (ToyModel.track) that the suite runs
    instances: int = 1  # toy instances per toy model: cells on "name@0" .. "name@{instances-1}" (toy seeds)

    def budget_for(self, method: str, steps: int | None = None) -> Budget:
        """The budget of ``method`` in this suite; ``steps`` (the CLI's --steps) overrides the step count."""
        b = self.method_budgets.get(method, self.budget)
        return b if steps is None else Budget(steps=steps, seconds=b.seconds, scale=b.scale)

    def budgets(self, methods: list[str], steps: int | None = None) -> dict[str, Budget]:
        return {m: self.budget_for(m, steps) for m in methods}


# the quick suite's cap: TMS 40-10's APD, SPD, SPD-main and VPD cells take 45-95 s at 10% of their steps. At 20 s
# those four were 40% of the suite's CPU and its quick start from a fresh clone took 3 min 2 s; a smoke run's
# scores on them mean little either way (the board marks every capped cell)
QUICK_CPU_CAP_S = 12.0
CELL_CPU_CAP_S = 120.0  # the full suite's soft cap on one cell's decomposition, in CPU seconds of one core

SUITES = {
    "quick": Suite(
        "quick",
        1,
        (0,),
        Budget(scale=0.1, seconds=QUICK_CPU_CAP_S),
        f"tiers 0-1, every method, one seed, 10% of each method's default steps or {QUICK_CPU_CAP_S:.0f} CPU "
        "seconds per cell, whichever comes first (a smoke run: the README's first command)",
    ),
    "full": Suite(
        "full",
        5,
        (0, 1, 2),
        Budget(scale=1.0, seconds=CELL_CPU_CAP_S),
        f"tiers 0-3 and 5 (tier 4 is the contested suite), every method, three seeds, each method's default "
        f"steps or {CELL_CPU_CAP_S:.0f} CPU seconds per cell, whichever comes first: the committed "
        "leaderboard's reproduction track (leaderboard/results)",
        skip_tiers=(4,),
    ),
    "contested": Suite(
        "contested",
        4,
        (0, 1, 2),
        Budget(scale=1.0, seconds=CELL_CPU_CAP_S),
        "tier 4 (contested ground truth: the residual MLPs), as the full suite runs the other tiers; not "
        "committed (its stored decompositions take about 215 MB, APD's 130 full-rank components of resid_mlp1 "
        "alone 26 MB per seed)",
        min_tier=4,
    ),
    "headline": Suite(
        "headline",
        3,
        (0,),
        Budget(scale=1.0),
        "the headline track (toy models that pass the headroom gate), 3 instances each (toy seeds 0-2), every "
        "method, one seed, each method's default steps with no time cap, blind (no toy-specific "
        "hyperparameters apply to these toys): the committed leaderboard's ranking",
        track="headline",
        instances=3,
    ),
    "budget": Suite(
        "budget",
        3,
        (0,),
        Budget(scale=1.0, seconds=CELL_CPU_CAP_S),
        f"the headline suite's cells with each cell capped at {CELL_CPU_CAP_S:.0f} CPU seconds: equal compute "
        "rather than converged runs; the board puts them on their own 'budget' track, never the headline",
        track="headline",
        instances=3,
    ),
    "paper": Suite(
        "paper",
        5,
        (0, 1, 2),
        Budget(scale=1.0),
        "every tier (0-5), every method, three seeds, each method's default steps with no time cap "
        "(hours on 2 CPU cores: for a GPU machine or a cluster)",
    ),
}


def toy_tiers(track: str | None = None) -> dict[str, int]:
    """Tier of each registered toy model (of ``track`` only, where given), read without building it."""
    toys = {name: TOY_MODELS.get(name)() for name in TOY_MODELS.names()}
    return {name: t.spec.tier for name, t in toys.items() if track is None or getattr(t, "track", None) == track}


def suite_cells(
    name: str,
    toys: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    heldout_seed: str | None = None,
) -> tuple[list[Cell], Suite]:
    """The cells of suite ``name``, optionally restricted to some toy models, methods or seeds. With
    ``heldout_seed`` (the headline suite only), each toy model's instances are drawn from that seed
    (``benchmark.heldout``) instead of 0, 1, 2."""
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}")
    suite = SUITES[name]
    if heldout_seed is not None:
        if suite.track != "headline":
            raise ValueError(
                f"a held-out seed draws headline toy instances; suite {name!r} runs the {suite.track} track"
            )
        base = toys or list(toy_tiers(suite.track))
        toys = [f"{t}@{k}" for t in base for k in heldout.instances(heldout_seed, suite.instances)]
    elif toys is None:
        toys = [
            t
            for t, tier in toy_tiers(suite.track).items()
            if suite.min_tier <= tier <= suite.max_tier and tier not in suite.skip_tiers
        ]
        if suite.instances > 1:
            toys = [f"{t}@{i}" for t in toys for i in range(suite.instances)]
    methods = methods if methods is not None else METHODS.names()
    seeds = seeds if seeds is not None else list(suite.seeds)
    return [Cell(t, m, s) for t in toys for m in methods for s in seeds], suite
