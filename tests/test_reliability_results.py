"""Result files: atomic writes survive SIGKILL, old schemas migrate, unknown ones are refused with advice,
and malformed files (hypothesis-generated) are refused with an error, never loaded."""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark.results import (
    REQUIRED,
    SCHEMA_VERSION,
    Cell,
    ResultError,
    load_results,
    parse_result,
    read_result,
    remove_stale_temp_files,
    stale_temp_files,
    write_result,
)
from benchmark.runner import plan, run_cell

CELL = Cell("tms_5-2", "random", 0)


@pytest.fixture(scope="module")
def valid() -> dict:
    result = run_cell(CELL)
    assert result["status"] == "ok"
    return result


def _text(result: dict) -> str:
    return json.dumps(result, sort_keys=True)


# -- migration ---------------------------------------------------------------------------------------------
V0 = {
    "schema_version": 0,
    "toy": "tms_5-2",
    "method": "pca",
    "seed": 1,
    "ok": True,
    "scores": {"hungarian": 0.5, "mmcs": 0.75},
    "created_at": "2026-01-01T00:00:00+00:00",
}


def test_a_version_0_file_is_migrated(tmp_path: Path) -> None:
    path = Cell("tms_5-2", "pca", 1).path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(V0))
    r = read_result(path, tmp_path)
    assert r["schema_version"] == SCHEMA_VERSION and r["migrated_from"] == 0
    assert r["cell"] == {"toy": "tms_5-2", "method": "pca", "seed": 1}
    assert r["status"] == "ok" and r["metrics"] == {"hungarian": 0.5, "mmcs": 0.75}
    failed = {**V0, "ok": False, "error": "boom", "scores": {}}
    path.write_text(json.dumps(failed))
    r = read_result(path, tmp_path)
    assert r["status"] == "error" and r["error"]["message"] == "boom"
    results, problems = load_results(tmp_path)
    assert len(results) == 1 and problems == []


def test_a_version_0_file_missing_fields_is_refused() -> None:
    with pytest.raises(ResultError, match="schema version 0 result lacks the field 'scores'"):
        parse_result(json.dumps({k: v for k, v in V0.items() if k != "scores"}))


def test_a_newer_schema_is_refused_with_advice(valid: dict) -> None:
    with pytest.raises(ResultError, match="upgrade pdbench"):
        parse_result(_text({**valid, "schema_version": SCHEMA_VERSION + 1}))


def test_a_version_without_migration_is_refused_with_advice(valid: dict) -> None:
    with pytest.raises(ResultError, match="cannot be migrated.*re-run the cell"):
        parse_result(_text({**valid, "schema_version": -1}))


def test_a_refused_stored_file_is_set_aside_and_its_cell_rerun(tmp_path: Path, valid: dict) -> None:
    path = write_result(tmp_path, valid)
    path.write_text(_text({**valid, "schema_version": 99}))
    messages: list[str] = []
    assert plan([CELL], tmp_path, log=messages.append) == [CELL]
    assert not path.exists() and path.with_name(path.name + ".refused-0").exists()
    assert any("upgrade pdbench" in m for m in messages)


# -- hand-made malformed files --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda r: r.update(metrics={"hungarian": "0.9"}), "finite number"),
        (lambda r: r["metrics"].update(hungarian=True), "finite number"),
        (lambda r: r.update(status="done"), "status must be"),
        (lambda r: r.update(cell={**r["cell"], "seed": "0"}), "seed must be an integer"),
        (lambda r: r.update(cell={**r["cell"], "method": "pca"}), "name is 'pca'"),
        (lambda r: r.update(status="error"), "error row needs"),
        (lambda r: r.update(error={"stage": "x"}), "carries an error"),
        (lambda r: r.update(metrics={}), "has no metrics"),
        (lambda r: r.update(schema_version=True), "schema_version must be an integer"),
        (lambda r: r["cost"].update(wall_time_s=[1]), "cost 'wall_time_s'"),
    ],
)
def test_malformed_fields_are_refused(valid: dict, mutate, fragment: str) -> None:
    bad = copy.deepcopy(valid)
    mutate(bad)
    with pytest.raises(ResultError, match=fragment):
        parse_result(_text(bad))


def test_nan_literals_are_refused(valid: dict) -> None:
    text = _text(valid).replace('"hungarian": ', '"hungarian": NaN, "x": ', 1)
    with pytest.raises(ResultError, match="NaN"):
        parse_result(text)


def test_a_file_in_the_wrong_place_is_refused(tmp_path: Path, valid: dict) -> None:
    path = write_result(tmp_path, valid)
    other = Cell(CELL.toy, CELL.method, 5).path(tmp_path)
    other.write_bytes(path.read_bytes())
    results, problems = load_results(tmp_path)
    assert len(results) == 1 and len(problems) == 1 and "belongs at" in problems[0]


def test_an_invalid_result_is_never_written(tmp_path: Path, valid: dict) -> None:
    with pytest.raises(ResultError):
        write_result(tmp_path, {**valid, "status": "maybe"})
    assert not list(tmp_path.rglob("*"))


# -- hypothesis: malformed files are refused, never loaded ------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _wrong_type_for(key: str) -> st.SearchStrategy:
    """Values of a type a valid result never has at ``key``."""
    not_dict = json_values.filter(lambda v: not isinstance(v, dict))
    if key == "schema_version":
        return json_values.filter(lambda v: v != SCHEMA_VERSION or isinstance(v, bool))
    if key == "status":
        return json_values.filter(lambda v: v not in ("ok", "error"))
    return not_dict


@st.composite
def malformed(draw, valid: dict) -> str:
    kind = draw(st.sampled_from(["truncate", "drop", "retype", "metric", "garbage", "json"]))
    r = copy.deepcopy(valid)
    if kind == "truncate":
        text = _text(r)
        return text[: draw(st.integers(0, len(text) - 1))]
    if kind == "drop":
        del r[draw(st.sampled_from(REQUIRED))]
    elif kind == "retype":
        key = draw(st.sampled_from(REQUIRED))
        r[key] = draw(_wrong_type_for(key))
    elif kind == "metric":
        name = draw(st.sampled_from(sorted(r["metrics"])))
        r["metrics"][name] = draw(
            json_values.filter(lambda v: v is not None and (not isinstance(v, int | float) or isinstance(v, bool)))
        )
    elif kind == "garbage":
        return draw(st.binary(max_size=64)).decode("latin-1")
    else:
        return json.dumps(draw(json_values))
    return _text(r)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hypothesis_malformed_results_are_refused(valid: dict, data) -> None:
    text = data.draw(malformed(valid))
    with pytest.raises(ResultError):
        parse_result(text)


def test_the_valid_result_itself_parses(valid: dict) -> None:
    """The base of the hypothesis mutations is accepted, so the refusals above are the mutations' doing."""
    assert parse_result(_text(valid)).to_dict() == valid


# -- SIGKILL mid-write -----------------------------------------------------------------------------------------
def _writer(root: str, result: dict, ready) -> None:
    result = {**result, "padding": "x" * (8 * 2**20)}  # 8 MiB, so that a write takes a while
    ready.set()
    while True:
        write_result(Path(root), result)


def test_sigkill_mid_write_leaves_no_partial_file(tmp_path: Path, valid: dict) -> None:
    ctx = multiprocessing.get_context("fork")  # a forked writer starts at once
    path = CELL.path(tmp_path)
    saw_temp = 0
    # Most of a write is serialising and checking the result; the temporary file exists only for part of
    # it, so keep killing at staggered moments until at least one kill has landed mid-write (5 kills at least).
    for attempt, delay in enumerate(0.15 + 0.037 * i for i in range(40)):
        if attempt >= 5 and saw_temp:
            break
        path.unlink(missing_ok=True)
        ready = ctx.Event()
        proc = ctx.Process(target=_writer, args=(str(tmp_path), valid, ready))
        proc.start()
        assert ready.wait(30)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        saw_temp += bool(stale_temp_files(tmp_path))
        if path.exists():  # whatever is under the result's name is a complete result
            assert read_result(path, tmp_path)["padding"] == "x" * (8 * 2**20)
        results, problems = load_results(tmp_path)
        assert problems == [] and len(results) == int(path.exists())
    assert saw_temp > 0, "no kill landed mid-write; the test proved nothing"
    assert remove_stale_temp_files(tmp_path) >= 1 and not stale_temp_files(tmp_path)
