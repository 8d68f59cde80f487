"""Named suites of cells: which toy models, methods and seeds a run covers."""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.method import Budget
from benchmark.registry import METHODS, TOY_MODELS
from benchmark.results import Cell


@dataclass(frozen=True)
class Suite:
    name: str
    max_tier: int
    seeds: tuple[int, ...]
    budget: Budget
    description: str


SUITES = {
    "quick": Suite("quick", 1, (0,), Budget(scale=1.0), "tiers 0-1, every method, one seed"),
    "full": Suite("full", 4, (0, 1, 2), Budget(scale=1.0), "every tier, every method, three seeds"),
}


def toy_tiers() -> dict[str, int]:
    """Tier of each registered toy model, read from its spec without building it."""
    return {name: TOY_MODELS.get(name)().spec.tier for name in TOY_MODELS.names()}


def suite_cells(name: str, toys: list[str] | None = None, methods: list[str] | None = None,
                seeds: list[int] | None = None) -> tuple[list[Cell], Suite]:
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}")
    suite = SUITES[name]
    if toys is None:
        toys = [t for t, tier in toy_tiers().items() if tier <= suite.max_tier]
    methods = methods if methods is not None else METHODS.names()
    seeds = seeds if seeds is not None else list(suite.seeds)
    return [Cell(t, m, s) for t in toys for m in methods for s in seeds], suite
