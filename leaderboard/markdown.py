"""The Markdown leaderboard: methods x toy models, the headline score's mean over seeds."""

from __future__ import annotations

from collections import defaultdict
from statistics import mean
from typing import Any

from tabulate import tabulate


def headline_table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per method, one column per toy model (ordered by tier), plus the mean."""
    toys: dict[str, int] = {}
    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    ref: dict[str, bool] = {}
    for r in results:
        toy, method = r["cell"]["toy"], r["cell"]["method"]
        toys.setdefault(toy, r["toy"].get("tier", 99))
        cells[(method, toy)].append(r)
        ref[method] = bool(r["method"].get("reference_row", False)) or ref.get(method, False)
    toy_order = sorted(toys, key=lambda t: (toys[t], t))
    header = ["method"] + [f"{t} (T{toys[t]})" for t in toy_order] + ["mean"]
    rows = []
    for method in sorted(ref, key=lambda m: (ref[m], m)):
        row, means = [method + (" (ref)" if ref[method] else "")], []
        for toy in toy_order:
            rs = cells.get((method, toy), [])
            ok = [r["metrics"][r["headline"]] for r in rs
                  if r["status"] == "ok" and r["metrics"].get(r["headline"]) is not None]
            errors = sum(r["status"] == "error" for r in rs)
            if ok:
                m = mean(ok)
                means.append(m)
                text = f"{m:.3f}" + (f" (n={len(ok)})" if len(ok) > 1 else "")
                row.append(text + (f" +{errors} err" if errors else ""))
            else:
                row.append(f"ERROR x{errors}" if errors else "-")
        row.append(f"{mean(means):.3f}" if means and len(means) == len(toy_order) else "-")
        rows.append(row)
    return header, rows


def render_markdown(results: list[dict[str, Any]], headline: str = "hungarian") -> str:
    header, rows = headline_table(results)
    table = tabulate(rows, headers=header, tablefmt="github", disable_numparse=True)
    return (f"# Leaderboard\n\nHeadline score: `{headline}` (mean over seeds; 1 = every mechanism recovered "
            f"one-to-one). `(ref)` marks reference rows.\n\n{table}\n")
