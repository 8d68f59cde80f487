"""Stored decompositions (benchmark/stored.py): what is written is what is scored, exactly, and a file that is
not one of ours is refused without running anything."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark.decomposition import Decomposition, LowRank
from benchmark.stored import (
    COMPACT_ABOVE_BYTES,
    StoredDecomposition,
    StoredDecompositionError,
    sha256,
)


def _mixed() -> Decomposition:
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(40, 2, generator=g), torch.randn(2, 30, generator=g)
    sparse = torch.zeros(40, 30)
    sparse[3, 4], sparse[10, 2] = 1.5, -2.0
    comps = [
        {"a": LowRank(u, v)},  # factors smaller than the matrix: kept
        {"a": u @ v},  # a dense rank-2 matrix: stored as factors within float32 rounding
        {"a": sparse, "b": torch.randn(7, generator=g)},  # mostly zeros: exact non-zero entries
        {"a": torch.randn(40, 30, generator=g)},  # full rank: dense
    ]
    attr = torch.rand(16, 4, generator=g)
    return Decomposition(comps, attributions=lambda x: attr[: x.shape[0]], groups=[[0, 1]], faithful=True)


def _roundtrip(stored: StoredDecomposition) -> StoredDecomposition:
    return StoredDecomposition.from_bytes(stored.to_bytes())


def test_roundtrip_keeps_every_part():
    x = torch.zeros(16, 3)
    stored = StoredDecomposition.capture(_mixed(), x)
    back = _roundtrip(stored)
    assert back.groups == [[0, 1]] and back.faithful is True and back.precision == "float32"
    assert torch.equal(back.attributions, stored.attributions)
    assert float(back.attributions.max()) == 1.0 and back.attributions.dtype == torch.float16
    dense = [{k: (v.dense() if isinstance(v, LowRank) else v) for k, v in c.items()} for c in back.components]
    orig = _mixed()
    assert torch.equal(dense[0]["a"], orig.components[0]["a"].dense())
    assert torch.allclose(dense[1]["a"], orig.components[1]["a"], atol=1e-5)  # low rank up to float32 rounding
    assert torch.equal(dense[2]["a"], orig.components[2]["a"]) and torch.equal(dense[2]["b"], orig.components[2]["b"])
    assert torch.equal(dense[3]["a"], orig.components[3]["a"])
    assert isinstance(back.components[1]["a"], LowRank)  # the dense rank-2 matrix was stored as factors
    assert back.to_bytes() == _roundtrip(back).to_bytes()  # stable: writing what was read gives the same bytes


def test_large_decompositions_are_compacted_to_float16_and_small_ones_are_not():
    small = StoredDecomposition.capture(_mixed(), torch.zeros(16, 3))
    assert small.compacted() is small
    n = COMPACT_ABOVE_BYTES // 4 // 1000 + 1
    big = StoredDecomposition([{"w": torch.randn(1000)} for _ in range(n)], None, False, None)
    half = _roundtrip(big.compacted())
    assert half.precision == "float16"
    assert len(big.compacted().to_bytes()) < 0.6 * len(big.to_bytes())
    assert torch.allclose(half.components[0]["w"], big.components[0]["w"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda b: b[:100],  # truncated
        lambda b: b"\x00" * 8 + b[8:],  # header length zero
        lambda b: b"not a safetensors file at all",
        lambda b: b.replace(b'"pdbench-decomposition"', b'"something-else-entirely"'),
    ],
)
def test_corrupt_files_are_refused(corrupt):
    data = StoredDecomposition.capture(_mixed(), torch.zeros(16, 3)).to_bytes()
    with pytest.raises(StoredDecompositionError):
        StoredDecomposition.from_bytes(corrupt(data))


def test_a_tensor_outside_the_layout_is_refused():
    from safetensors.torch import load, save

    data = StoredDecomposition.capture(_mixed(), torch.zeros(16, 3)).to_bytes()
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + n])["__metadata__"]
    tensors = load(data)
    tensors["smuggled"] = torch.zeros(3)
    with pytest.raises(StoredDecompositionError, match="belong to no component"):
        StoredDecomposition.from_bytes(save(tensors, metadata=meta))


def test_sha256_is_of_the_bytes():
    data = StoredDecomposition.capture(_mixed(), torch.zeros(16, 3)).to_bytes()
    assert sha256(data) == sha256(bytes(data)) and len(sha256(data)) == 64


def test_scores_do_not_depend_on_the_callers_torch_threads():
    """A fixed basis on a symmetric toy has exact ties in its matching: scoring on more threads once picked
    other units (activity metrics 4e-4 apart). Scoring always runs on one thread."""
    from benchmark.cell import run_method, score_stored
    from benchmark.results import Cell
    from benchmark.toy import load_toy

    result = run_method(Cell("higher_rank_30-10-30", "neuron", 0))
    stored = StoredDecomposition.from_bytes(result["_decomposition"])
    toy = load_toy("higher_rank_30-10-30")
    before = torch.get_num_threads()
    try:
        scores = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            scores.append(score_stored(toy, stored))
    finally:
        torch.set_num_threads(before)
    assert scores[0] == scores[1]


def test_validate_allows_rounding_of_a_large_ratio_and_refuses_an_edited_score():
    """1e-6, plus 1e-9 of the value: another CPU's float64 rounding of a ratio near 1e5 passes, an edit of the
    last printed digit of a [0, 1] score does not."""
    from benchmark.rescore import compare

    ok = {"intervention_specificity": 78779.55712, "hungarian": 0.5}
    assert compare(ok, {"intervention_specificity": 78779.55712 + 3e-5, "hungarian": 0.5 + 5e-7}) == []
    problems = compare(ok, {"intervention_specificity": 78779.5573, "hungarian": 0.5 + 2e-6})
    assert len(problems) == 2 and all("recomputed from the stored decomposition" in p for p in problems)
