"""Seeds trained together (issue: speed): the same decompositions, bit for bit, as each seed alone; asked to
(``--seeds-together``), the runner groups a (toy model, method)'s uncapped seeds into one task and stores one
result per seed, and a group's failures stay with the seeds they belong to."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from faults import isolated_registries

from benchmark.budget import Budget
from benchmark.executors import Limits
from benchmark.registry import METHODS
from benchmark.results import Cell, read_result
from benchmark.runner import RunOptions, run_grid, seed_tasks
from methods._spd_group import train_together

GROUP_PLUGIN = Path(__file__).parent / "faults" / "group_plugin.py"


def _quiet(_: str) -> None:
    pass


def _fingerprint(dec, x: torch.Tensor) -> tuple[bytes, ...]:  # noqa: ANN001
    """The decomposition's exact bits: every component's factors and the attributions on ``x``."""
    parts = [t.numpy().tobytes() for comp in dec.components for v in comp.values() for t in (v.left, v.right)]
    return (*parts, dec.attributions(x).numpy().tobytes())


@pytest.mark.parametrize(
    ("name", "kw"),
    [("tms_5-2", {}), ("tms_5-2", {"stoch_coeff": 0.0}), ("gated_circuits-rot@0", {"tuned": False})],
)
def test_spd_seeds_together_are_bit_identical(toy, name: str, kw: dict) -> None:  # noqa: ANN001
    """Three seeds in one batched model against each alone: the same bits. The headline toy runs the blind rule,
    whose beta_3 differs per seed; without the stochastic term the masks are drawn in another order."""
    t = toy(name)
    spd = METHODS.get("spd")(steps=25, n_eval=500, batch_size=128, **kw)
    target = t.target()
    x = t.sample(64, torch.Generator().manual_seed(9))
    alone = [_fingerprint(spd.decompose(target, Budget(), seed), x) for seed in (0, 1, 2)]
    together = spd.decompose_seeds(target, Budget(), [0, 1, 2])
    assert [_fingerprint(d, x) for d in together] == alone
    assert len(set(alone)) == 3  # the seeds differ


def test_a_failing_seed_leaves_the_group(toy) -> None:  # noqa: ANN001
    """A seed whose loss becomes non-finite ends with its error; the others train on, unchanged."""
    t = toy("tms_5-2")
    spd = METHODS.get("spd")(steps=15)
    target = t.target()

    def trainers():
        return [spd.trainer(target, Budget(), s, "cpu")[0] for s in (0, 1, 2)]

    ref = trainers()
    train_together([ref[0], ref[2]])
    group = trainers()
    clean = group[1].sample_fn
    group[1].sample_fn = lambda n, g: clean(n, g) * float("nan")
    logs = train_together(group)
    assert isinstance(logs[1], FloatingPointError) and "step 0" in str(logs[1])
    for a, b in ((ref[0], group[0]), (ref[2], group[2])):
        assert all(torch.equal(p, q) for p, q in zip(a.spd.parameters(), b.spd.parameters(), strict=True))


def test_seed_tasks_group_only_uncapped_seeds_of_methods_that_can() -> None:
    cells = [Cell("tms_5-2", m, s) for m in ("spd", "pca") for s in (0, 1, 2)]
    tasks = seed_tasks(cells, RunOptions(budget=Budget(), seed_groups=True))
    assert [(t.cell, t.seeds) for t in tasks] == [
        (Cell("tms_5-2", "spd", 0), (1, 2)),
        *[(Cell("tms_5-2", "pca", s), ()) for s in (0, 1, 2)],
    ]
    for o in (RunOptions(budget=Budget(seconds=120.0), seed_groups=True), RunOptions(budget=Budget())):
        assert all(not t.seeds for t in seed_tasks(cells, o))
    assert sum(len(t.cells) for t in tasks) == len(cells)


def test_runner_stores_a_group_as_the_seeds_alone(tmp_path: Path) -> None:
    """Through worker processes: grouped and apart, the same stored decompositions and scores; the grouped
    results say which seeds trained together."""
    cells = [Cell("tms_5-2", "spd", s) for s in (0, 1)]
    opts = {"budget": Budget(steps=20), "jobs": 1, "log": _quiet}
    run_grid(cells, tmp_path / "together", seed_groups=True, **opts)
    run_grid(cells, tmp_path / "apart", **opts)
    for c in cells:
        a, b = read_result(c.path(tmp_path / "together")), read_result(c.path(tmp_path / "apart"))
        assert a["decomposition"]["sha256"] == b["decomposition"]["sha256"]
        assert a["metrics"] == b["metrics"]
        assert a["cost"]["trained_with"] == "0,1" and "trained_with" not in b["cost"]


@pytest.fixture
def group_faults():
    from benchmark.registry import load_plugin

    with isolated_registries():
        load_plugin(GROUP_PLUGIN)
        yield


def test_group_failures_stay_with_their_seeds(tmp_path: Path, group_faults) -> None:  # noqa: ANN001
    cells = [Cell("tms_5-2", m, s) for m in ("group_one_fails", "group_exit") for s in (0, 1, 2)]
    run_grid(
        cells, tmp_path, plugins=[str(GROUP_PLUGIN)], jobs=1, log=_quiet, limits=Limits(time_s=60), seed_groups=True
    )
    status = {c: read_result(c.path(tmp_path)) for c in cells}
    one = [status[Cell("tms_5-2", "group_one_fails", s)] for s in (0, 1, 2)]
    assert [r["status"] for r in one] == ["ok", "error", "ok"]
    assert "injected failure of seed 1" in one[1]["error"]["message"]
    for s in (0, 1, 2):
        r = status[Cell("tms_5-2", "group_exit", s)]
        assert r["status"] == "error" and r["error"]["type"] == "WorkerDied", r["error"]


def test_large_groups_train_one_after_another(toy) -> None:  # noqa: ANN001
    """Past GROUP_HIDDEN_MAX stacking costs more than it saves (TMS 40-10, C = 200): the seeds run in turn."""
    from methods._spd_group import can_train_together

    spd = METHODS.get("spd")()
    for name, ok in (("tms_5-2", True), ("tms_40-10", False)):
        target = toy(name).target()
        assert can_train_together([spd.trainer(target, Budget(), s, "cpu")[0] for s in (0, 1, 2)]) is ok
    target = toy("tms_5-2").target()
    assert not can_train_together([spd.trainer(target, Budget(), 0, "cpu")[0]])  # one run is no group
    other = METHODS.get("spd")(lr=0.5).trainer(target, Budget(), 1, "cpu")[0]
    assert not can_train_together([spd.trainer(target, Budget(), 0, "cpu")[0], other])  # other settings
