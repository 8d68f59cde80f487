"""``--executor ray`` against a local Ray instance (``ray.init(num_cpus=2)``): results, error rows for a raising,
a hanging and a crashing method, and plugins shipped to the Ray workers by content. Skipped where Ray is
not installed (it is an optional extra: ``pip install 'pdbench[ray]'``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from faults import PLUGIN

from benchmark.executors import Limits
from benchmark.results import Cell, load_results
from benchmark.runner import run_grid

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'pdbench[ray]'); not installed here")
TOY = "tms_5-2"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_the_ray_executor_runs_cells_and_isolates_faults(local_ray, tmp_path: Path) -> None:
    cells = [Cell(TOY, m, s) for m in ("pca", "random") for s in (0, 1)]
    cells += [Cell(TOY, m, 0) for m in ("fault_raise", "fault_hang", "fault_segfault")]
    run_grid(
        cells, tmp_path / "ray", executor="ray", plugins=[str(PLUGIN)], log=lambda _: None, limits=Limits(time_s=30)
    )
    results, problems = load_results(tmp_path / "ray")
    assert problems == []
    rows = {r["cell"]["method"] + str(r["cell"]["seed"]): r for r in results}
    assert len(rows) == len(cells)
    for key in ("pca0", "pca1", "random0", "random1"):
        assert rows[key]["status"] == "ok", rows[key]["error"]
    assert rows["fault_raise0"]["error"]["type"] == "RuntimeError"
    assert "injected failure" in rows["fault_raise0"]["error"]["message"]
    assert rows["fault_hang0"]["error"]["type"] == "TimeLimitExceeded"
    assert rows["fault_segfault0"]["status"] == "error"
    assert rows["fault_segfault0"]["error"]["stage"] == "running the cell (Ray task)"
    # the same cells on local worker processes give the same scores
    run_grid(cells[:4], tmp_path / "local", jobs=2, log=lambda _: None)
    local = {r["cell"]["method"] + str(r["cell"]["seed"]): r["metrics"] for r in load_results(tmp_path / "local")[0]}
    for key, metrics in local.items():
        assert rows[key]["metrics"] == pytest.approx(metrics, abs=1e-9)
