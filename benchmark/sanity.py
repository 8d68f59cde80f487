"""Known-good and known-bad decompositions built from a toy model's ground truth (docs/metrics.md, "Sanity
table"): a metric worth its name orders them oracle > noisy oracle (small noise) > split halves > merged
pairs > random, and never ranks the single ``whole`` component on top.

Every row is a parameter-space object without attributions, so the grouping levels coincide and the table
shows what the credit and the matching see. Toys whose mechanisms are spans without exact components get
no rows (there is no exact weight to split or merge).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from benchmark.decomposition import Component, Decomposition
from benchmark.scoring import HEADLINE, score
from benchmark.toy import ToyModel

NOISE_LEVELS = (0.1, 0.3, 1.0, 3.0)  # relative size of the Gaussian noise added to each mechanism
SEED = 0
FAITHFUL = ("oracle", "split halves", "merged pairs", "copies", "whole")  # rows that sum to the weights


def _halves(comp: Component) -> tuple[Component, Component]:
    """The component's non-zero entries dealt alternately into two pieces that sum to it."""
    a: Component = {}
    b: Component = {}
    for name, t in comp.items():
        flat = t.reshape(-1)
        nz = torch.nonzero(flat).flatten()
        mask = torch.zeros_like(flat, dtype=torch.bool)
        mask[nz[::2]] = True
        a[name] = torch.where(mask, flat, 0.0).reshape(t.shape)
        b[name] = torch.where(mask, 0.0, flat).reshape(t.shape)
    return a, b


def _sliver(comp: Component) -> Component:
    """The first non-zero input column of the component's largest matrix, the rest dropped: a rank-1 sliver
    (a mechanism that is one column is its own sliver)."""
    name = max(comp, key=lambda n: float(comp[n].norm()))  # type: ignore[union-attr]
    t = comp[name]
    assert isinstance(t, Tensor)
    if t.dim() != 2:
        return {name: t}
    col = int(torch.nonzero(t.ne(0).any(dim=0)).flatten()[0])
    out = torch.zeros_like(t)
    out[:, col] = t[:, col]
    return {name: out}


def _add(a: Component, b: Component, scale: float = 1.0) -> Component:
    """``a + scale * b`` over the parameters either names."""
    out: Component = dict(a)
    for n, v in b.items():
        out[n] = out[n] + scale * v if n in out else scale * v  # type: ignore[operator]
    return out


def decompositions(toy: ToyModel) -> dict[str, Decomposition]:
    """The sanity rows for ``toy``, by name; empty where a mechanism has no exact components."""
    exact = [m.components for m in toy.ground_truth.mechanisms]
    if not exact or any(e is None for e in exact):
        return {}
    z: list[Component] = [dict(e) for e in exact if e is not None]
    shapes = toy.param_shapes()
    g = torch.Generator().manual_seed(SEED)

    def noise_like(comp: Component, rel: float) -> Component:
        n = {k: torch.randn(shapes[k], generator=g) for k in toy.spec.decomposed}
        size = sum(float(v.pow(2).sum()) for v in n.values()) ** 0.5
        norm = sum(float(v.pow(2).sum()) for v in comp.values()) ** 0.5  # type: ignore[union-attr]
        return _add(comp, n, rel * norm / size)

    rows: dict[str, list[Component]] = {
        "oracle": z,
        "split halves": [h for c in z for h in _halves(c)],
        "merged pairs": [_add(z[i], z[i + 1]) if i + 1 < len(z) else z[i] for i in range(0, len(z), 2)],
        "sliver": [_sliver(c) for c in z],
        "copies": [{k: v / 2 for k, v in c.items()} for c in z for _ in range(2)],
        "whole": [functools.reduce(_add, z)],
        "random": [{k: torch.randn(shapes[k], generator=g) for k in toy.spec.decomposed} for _ in z],
    }
    for rel in NOISE_LEVELS:
        rows[f"noisy oracle {rel:g}"] = [noise_like(c, rel) for c in z]
    return {name: Decomposition(comps, faithful=name in FAITHFUL) for name, comps in rows.items()}


def table(
    toy: ToyModel, metrics: tuple[str, ...] = (HEADLINE, "hungarian_raw", "mmcs", "mmcs_apd", "mass_f1")
) -> dict[str, dict[str, float | None]]:
    """``{row: {metric: value}}`` for the sanity rows of ``toy``."""
    return {name: score(toy, dec, list(metrics)) for name, dec in decompositions(toy).items()}


def markdown(toys: list[ToyModel], metric: str = HEADLINE) -> str:
    """One Markdown table: a row per sanity decomposition, a column per toy, ``metric`` in the cells."""
    tables = {t.spec.name: table(t, (metric,)) for t in toys}
    tables = {k: v for k, v in tables.items() if v}
    rows = next(iter(tables.values())).keys() if tables else []
    head = "| decomposition | " + " | ".join(f"`{k}`" for k in tables) + " |"
    lines = [head, "|---|" + "---|" * len(tables)]
    for row in rows:
        cells = [tables[k][row][metric] for k in tables]
        lines.append(f"| {row} | " + " | ".join("N/A" if v is None else f"{v:.3f}" for v in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m benchmark.sanity [METRIC]: the tables of docs/metrics.md
    import sys

    import benchmark.cli  # noqa: F401  (registers the built-in toy models and metrics)
    from benchmark.registry import TOY_MODELS
    from benchmark.toy import load_toy

    unbuilt = {n: TOY_MODELS.get(n)() for n in TOY_MODELS.names()}  # the reproduction track, as docs/metrics.md
    names = [n for n, t in unbuilt.items() if t.spec.gt_status != "contested" and t.track == "reproduction"]
    print(markdown([load_toy(n) for n in names], *(sys.argv[1:2] or [HEADLINE])))
