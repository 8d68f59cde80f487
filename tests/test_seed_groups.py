"""Seeds trained together (issue: speed): the same decompositions, bit for bit, as each seed alone; by default
for the methods whose groups pay (L3D), and for every method that can when asked (``--seeds-together``), the
runner groups a (toy model, method)'s uncapped seeds into one task and stores one result per seed, and a group's
failures stay with the seeds they belong to."""

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


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("tms_5-2", {"epochs": 3}),  # the paper's settings: n_v 5, rank 1
        ("square_mlp", {"epochs": 12, "lr_step_epochs": 5, "n_samples": 256}),  # rank 2, warm start 10 epochs, lr decay
        ("gated_circuits-rot@0", {"tuned": False, "epochs": 2, "reference": "mean"}),  # blind rule, two matrices
    ],
)
def test_l3d_seeds_together_are_bit_identical(toy, name: str, kw: dict) -> None:  # noqa: ANN001
    """Three seeds in one batched model against each alone: the same factors, attributions and loss curve."""
    t = toy(name)
    l3d = METHODS.get("l3d")(**kw)
    target = t.target()
    x = t.sample(64, torch.Generator().manual_seed(9))

    def bits(dec) -> tuple:  # noqa: ANN001
        return (_dense_fingerprint(dec, x), tuple(dec.record.extra["loss_curve"]), tuple(dec.record.extra["p_act"]))

    alone = [bits(l3d.decompose(target, Budget(), seed)) for seed in (0, 1, 2)]
    together = l3d.decompose_seeds(target, Budget(), [0, 1, 2])
    assert [bits(d) for d in together] == alone
    assert len(set(alone)) == 3


def _dense_fingerprint(dec, x: torch.Tensor) -> tuple[bytes, ...]:  # noqa: ANN001
    parts = [dec.dense(i)[n].numpy().tobytes() for i in range(len(dec)) for n in sorted(dec.components[i])]
    return (*parts, dec.attributions(x).numpy().tobytes())


@pytest.mark.parametrize(("n_samples", "batch_size"), [(1011, 32), (1000, 7)])
def test_l3d_groups_are_bit_identical_whatever_the_batch(toy, n_samples: int, batch_size: int) -> None:  # noqa: ANN001
    """An epoch's last batch of 19 rows, or batches of 7: every run's slice of a stacked tensor starts at another
    alignment than its own tensor alone, and BLAS may sum in another order there (methods/_seed_groups.py); each
    run's products take tensors of its own, so the bits stay (before, seed 1 differed in both cases)."""
    from methods._l3d_group import can_train_together

    target = toy("tms_5-2").target()
    l3d = METHODS.get("l3d")(n_samples=n_samples, batch_size=batch_size, epochs=2)
    assert can_train_together([l3d._setup(target, Budget(), s, "cpu")[0] for s in (0, 1, 2)])
    x = torch.rand(8, 5)
    alone = [_dense_fingerprint(l3d.decompose(target, Budget(), s), x) for s in (0, 1, 2)]
    assert [_dense_fingerprint(d, x) for d in l3d.decompose_seeds(target, Budget(), [0, 1, 2])] == alone


def test_spd_apd_and_vpd_group_whole_blocks_of_rows_only(toy, monkeypatch) -> None:  # noqa: ANN001
    """A batch of 7 rows a run: SPD's, VPD's and APD's groups would hand their kernels slices at other alignments
    than alone (3 and 7 rows gave other bits on gated_circuits-rot@0), so the seeds run in turn; 32 rows group."""
    from methods import _apd_group, _spd_group, _vpd_group

    target = toy("tms_5-2").target()
    for name, group in (("spd", _spd_group), ("vpd", _vpd_group)):
        for rows, together in ((7, False), (32, True)):
            method = METHODS.get(name)(batch_size=rows)
            runs = [method.trainer(target, Budget(), s, "cpu")[0] for s in (0, 1)]
            assert group.can_train_together(runs) is together, (name, rows)

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("APD grouped runs of 7 rows")

    monkeypatch.setattr(_apd_group, "train_together", refuse)
    monkeypatch.setattr("methods.apd.train_together", refuse)
    apd = METHODS.get("apd")(steps=2, batch_size=7)
    x = torch.rand(8, 5)
    alone = [_dense_fingerprint(apd.decompose(target, Budget(), s), x) for s in (0, 1)]
    assert [_dense_fingerprint(d, x) for d in apd.decompose_seeds(target, Budget(), [0, 1])] == alone


def test_l3d_runs_that_cannot_stack_train_in_turn(toy) -> None:  # noqa: ANN001
    """Without cached Jacobians (a large network) the runs do not stack: the seeds run one after another."""
    from methods._l3d_group import can_train_together

    target = toy("tms_5-2").target()
    l3d = METHODS.get("l3d")(epochs=1)
    runs = [l3d._setup(target, Budget(), s, "cpu")[0] for s in (0, 1)]
    assert can_train_together(runs) and not can_train_together(runs[:1])
    big = METHODS.get("l3d")(epochs=1, jacobian_limit=1.0)
    assert not can_train_together([big._setup(target, Budget(), s, "cpu")[0] for s in (0, 1)])
    x = torch.rand(8, 5)
    alone = [_dense_fingerprint(big.decompose(target, Budget(), s), x) for s in (0, 1)]
    assert [_dense_fingerprint(d, x) for d in big.decompose_seeds(target, Budget(), [0, 1])] == alone


def test_an_l3d_run_that_diverges_leaves_the_group(toy) -> None:  # noqa: ANN001
    """A run whose loss becomes non-finite ends with the error it raises alone; the others are unchanged."""
    from methods._l3d_group import train_together
    from methods._l3d_train import train_run

    target = toy("tms_5-2").target()
    l3d = METHODS.get("l3d")(epochs=3)

    def runs():
        return [l3d._setup(target, Budget(), s, "cpu")[0] for s in (0, 1, 2)]

    ref = runs()
    group = runs()
    for r in (ref[1], group[1]):
        r.src.J[:] = float("inf")  # type: ignore[index]
    with pytest.raises(FloatingPointError) as alone:
        train_run(ref[1])
    fits = train_together(group)
    assert isinstance(fits[1], FloatingPointError) and str(fits[1]) == str(alone.value)
    for i in (0, 2):
        a = train_run(ref[i])
        b = fits[i]
        assert not isinstance(b, Exception) and a.loss_curve == b.loss_curve and a.steps == b.steps == 96
        assert all(torch.equal(p, q) for p, q in zip(a.decoder.parameters(), b.decoder.parameters(), strict=True))


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("tms_5-2", {"steps": 25, "batch_size": 512}),  # the paper's settings, batch top-k
        # the resid-MLP recipe's pieces: unit-norm factors, per-input top-k, the activation loss (3 uses of a weight)
        ("tms_5-2", {"steps": 15, "unit_norm": True, "batch_topk": False, "topk": 2.0, "act_recon_coeff": 1.0}),
        ("gated_circuits-rot@0", {"tuned": False, "steps": 6, "batch_size": 256}),  # blind rule, two matrices
    ],
)
def test_apd_seeds_together_are_bit_identical(toy, name: str, kw: dict) -> None:  # noqa: ANN001
    """Three APD seeds in one batched model against each alone: the same factors, attributions and log."""
    t = toy(name)
    apd = METHODS.get("apd")(log_every=5, **kw)
    target = t.target()
    x = t.sample(64, torch.Generator().manual_seed(9))

    def bits(dec) -> tuple:  # noqa: ANN001
        return (_dense_fingerprint(dec, x), str(dec.record.extra["log"]))

    alone = [bits(apd.decompose(target, Budget(), seed)) for seed in (0, 1, 2)]
    together = apd.decompose_seeds(target, Budget(), [0, 1, 2])
    assert [bits(d) for d in together] == alone
    assert len(set(alone)) == 3


def test_an_apd_seed_that_diverges_leaves_the_group(toy, monkeypatch) -> None:  # noqa: ANN001
    """Seed 1's inputs turn NaN at step 3: alone it raises; together it ends with the same error and seeds 0 and
    2 are the decompositions they are alone."""
    from methods.apd import _Run

    draw = _Run.before_step

    def poisoned(self, step: int) -> torch.Tensor:  # noqa: ANN001
        x = draw(self, step)
        return x * float("nan") if self.seed == 1 and step == 3 else x

    monkeypatch.setattr(_Run, "before_step", poisoned)
    t = toy("tms_5-2")
    apd = METHODS.get("apd")(steps=8, batch_size=256)
    target = t.target()
    x = t.sample(32, torch.Generator().manual_seed(9))
    with pytest.raises(FloatingPointError) as alone_error:
        apd.decompose(target, Budget(), 1)
    together = apd.decompose_seeds(target, Budget(), [0, 1, 2])
    assert isinstance(together[1], FloatingPointError) and str(together[1]) == str(alone_error.value)
    assert "at step 3" in str(together[1])
    for i, seed in ((0, 0), (2, 2)):
        assert _dense_fingerprint(together[i], x) == _dense_fingerprint(apd.decompose(target, Budget(), seed), x)


@pytest.mark.parametrize(
    ("name", "toy_name", "kw"),
    [
        ("vpd", "tms_5-2", {}),  # the adversary, subset routing, the residual channel, the warm-up
        ("vpd", "tms_5-2", {"ci": "vector", "ci_hidden": 50}),  # the paper's CI function: an MLP per site
        ("spd-main", "tms_5-2", {}),  # routing through every site, the layerwise term, no faithfulness loss
        ("vpd", "gated_circuits-rot@0", {"tuned": False}),  # the blind rule: each seed's own minimality coefficients
    ],
)
def test_vpd_seeds_together_are_bit_identical(toy, name: str, toy_name: str, kw: dict) -> None:  # noqa: ANN001
    """Three VPD (or SPD main) seeds in one batched model against each alone: the same factors, attributions and
    loss history, and the runs did train as a group."""
    from methods._vpd_group import can_train_together

    t = toy(toy_name)
    method = METHODS.get(name)(steps=12, n_eval=500, batch_size=128, log_every=4, **kw)
    target = t.target()
    x = t.sample(64, torch.Generator().manual_seed(9))

    def bits(dec) -> tuple:  # noqa: ANN001
        return (*_fingerprint(dec, x), str(dec.record.extra["history"]))

    assert can_train_together([method.trainer(target, Budget(), s, "cpu")[0] for s in (0, 1, 2)])
    alone = [bits(method.decompose(target, Budget(), seed)) for seed in (0, 1, 2)]
    together = method.decompose_seeds(target, Budget(), [0, 1, 2])
    assert [bits(d) for d in together] == alone
    assert len(set(alone)) == 3


def test_vpd_runs_group_only_when_alike_and_small(toy) -> None:  # noqa: ANN001
    """Runs that differ in more than their seed, one run alone, or stacked CI MLPs past SPD's cap (TMS 40-10,
    C 100) do not group; ``decompose_seeds`` then runs the seeds one after another, each as alone."""
    from methods._vpd_group import can_train_together

    def trainers(name: str, seeds: tuple[int, ...], **kw) -> list:  # noqa: ANN003
        vpd, target = METHODS.get("vpd")(**kw), toy(name).target()
        return [vpd.trainer(target, Budget(), s, "cpu")[0] for s in seeds]

    assert can_train_together(trainers("tms_5-2", (0, 1, 2)))
    assert not can_train_together(trainers("tms_5-2", (0,)))
    assert not can_train_together(trainers("tms_40-10", (0, 1)))  # 2 x 1,024 x 2 sites x 100 x 16 hidden units
    mixed = trainers("tms_5-2", (0, 1))
    mixed[1].cfg.lr = 0.5
    assert not can_train_together(mixed)
    target, x = toy("tms_5-2").target(), torch.rand(8, 5)
    big = METHODS.get("vpd")(steps=3, n_eval=200, warmup_steps=5, batch_size=2_500)  # 3 x 2,500 x 2 x 20 x 16 > the cap
    assert not can_train_together([big.trainer(target, Budget(), s, "cpu")[0] for s in (0, 1, 2)])
    alone = [_fingerprint(big.decompose(target, Budget(), s), x) for s in (0, 1, 2)]
    assert [_fingerprint(d, x) for d in big.decompose_seeds(target, Budget(), [0, 1, 2])] == alone


def test_a_vpd_seed_that_diverges_leaves_the_group(toy) -> None:  # noqa: ANN001
    """Seed 1's inputs turn NaN at its fourth batch: alone it raises; together it ends with the same error, the
    group drops its adversary, and seeds 0 and 2 are the decompositions they are alone."""
    from methods._vpd_core import VPDTrainer

    draw = VPDTrainer.sample
    calls: dict[int, int] = {}

    def poisoned(self, n: int) -> torch.Tensor:  # noqa: ANN001
        x = draw(self, n)
        if n != self.cfg.batch_size:  # the probe that finds the sites
            return x
        calls[id(self)] = calls.get(id(self), 0) + 1
        return x * float("nan") if self.g_mask.initial_seed() == 2 and calls[id(self)] == 4 else x

    t = toy("tms_5-2")
    vpd = METHODS.get("vpd")(steps=8, n_eval=500, batch_size=64)
    target = t.target()
    x = t.sample(32, torch.Generator().manual_seed(9))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VPDTrainer, "sample", poisoned)
        with pytest.raises(FloatingPointError) as alone_error:
            vpd.decompose(target, Budget(), 1)
        together = vpd.decompose_seeds(target, Budget(), [0, 1, 2])
    assert isinstance(together[1], FloatingPointError) and str(together[1]) == str(alone_error.value)
    assert "at step 3" in str(together[1])
    for i in (0, 2):
        assert _fingerprint(together[i], x) == _fingerprint(vpd.decompose(target, Budget(), i), x)


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
    cells = [Cell("tms_5-2", m, s) for m in ("spd", "l3d", "pca") for s in (0, 1, 2)]
    tasks = seed_tasks(cells, RunOptions(budget=Budget(), seed_groups=True))
    assert [(t.cell, t.seeds) for t in tasks] == [
        (Cell("tms_5-2", "spd", 0), (1, 2)),
        (Cell("tms_5-2", "l3d", 0), (1, 2)),
        *[(Cell("tms_5-2", "pca", s), ()) for s in (0, 1, 2)],
    ]
    assert sum(len(t.cells) for t in tasks) == len(cells)
    # by default only the methods whose groups pay (L3D; SPD's stacked step costs as much as its seeds in turn)
    default = seed_tasks(cells, RunOptions(budget=Budget()))
    assert [t.seeds for t in default if t.seeds] == [(1, 2)] and default[3].cell == Cell("tms_5-2", "l3d", 0)
    for o in (
        RunOptions(budget=Budget(seconds=120.0), seed_groups=True),
        RunOptions(budget=Budget(), seed_groups=False),
    ):
        assert all(not t.seeds for t in seed_tasks(cells, o))


@pytest.mark.parametrize(("method", "ask"), [("spd", True), ("apd", True), ("l3d", None)])
def test_runner_stores_a_group_as_the_seeds_alone(tmp_path: Path, method: str, ask: bool | None) -> None:
    """Through worker processes: grouped (SPD when asked, L3D by default) and apart, the same stored
    decompositions and scores; the grouped results say which seeds trained together."""
    cells = [Cell("tms_5-2", method, s) for s in (0, 1)]
    opts = {"budget": Budget(steps=20), "jobs": 1, "log": _quiet}
    run_grid(cells, tmp_path / "together", seed_groups=ask, **opts)
    run_grid(cells, tmp_path / "apart", seed_groups=False, **opts)
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
