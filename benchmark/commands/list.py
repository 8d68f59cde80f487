"""``pdbench list``: the registered toy models, methods and metrics."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from benchmark.registry import METHODS, METRICS, TOY_MODELS

if TYPE_CHECKING:
    from benchmark.cache import WeightCache


def toy_rows(cache: WeightCache | None = None) -> list[list]:
    """One row per registered toy model, by track (headline, reproduction, diagnostic), then tier: the
    ladder, with the instances its suite scores (instance 0's size and description). Reads the weight
    cache's metadata for the training time and seed; never trains."""
    from benchmark.cache import WeightCache
    from benchmark.suites import SUITES

    cache = cache or WeightCache()
    rows = []
    for name in TOY_MODELS.names():
        toy = TOY_MODELS.get(name)()
        spec = toy.spec
        net = toy.make_model()
        named = dict(net.named_parameters())
        n_dec = sum(named[k].numel() for k in spec.decomposed if k in named)
        n_all = sum(p.numel() for p in named.values())
        meta = toy.stored_meta(cache)
        if meta is None:
            trained = "not built"
        elif meta.get("shipped"):
            trained = f"shipped (seed {meta['train_seed']})"
        else:
            secs = meta.get("extra", {}).get("train_seconds")
            trained = (
                "hand-built"
                if meta.get("extra", {}).get("hand_built")
                else f"{secs:.1f} s"
                if secs is not None
                else "?"
            ) + f" (seed {meta.get('train_seed')})"
        track = getattr(toy, "track", "reproduction")
        k = SUITES["headline"].instances if track == "headline" else 1
        instances = f"{k} (@0..@{k - 1})" if k > 1 else "1"
        rows.append(
            [name, spec.tier, track, instances, spec.gt_status, f"{n_dec:,} / {n_all:,}", trained, spec.description]
        )
    order = {"headline": 0, "reproduction": 1, "diagnostic": 2}
    return sorted(rows, key=lambda r: (order.get(r[2], 3), r[1], r[0]))


def better(m) -> str:
    """Show "closer to X" for a metric with an ideal value (ML2R: 1), else "higher" or "lower"."""
    if m.ideal is not None:
        return f"closer to {m.ideal:g}"
    return "higher" if m.higher_is_better else "lower"


def cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    what = args.what
    if what in ("toys", "all"):
        print(
            tabulate(
                toy_rows(),
                headers=[
                    "toy model",
                    "tier",
                    "track",
                    "instances",
                    "ground truth",
                    "params (decomposed / all)",
                    "training (cached)",
                    "description",
                ],
                maxcolwidths=[None, None, None, 14, None, None, None, 50],
            )
        )
        print()
    if what in ("methods", "all"):
        rows = []
        for name, cls in METHODS.items():
            flags = (
                "reference row" + (", sees ground truth" if cls.sees_ground_truth else "") if cls.reference_row else ""
            )
            rows.append([name, cls.version, flags, cls.paper])
        print(tabulate(rows, headers=["method", "version", "", "paper"]))
        print()
    if what in ("metrics", "all"):
        rows = [[n, m.version, better(m), m.description] for n, m in METRICS.items()]
        print(tabulate(rows, headers=["metric", "version", "better", "definition"], maxcolwidths=[None] * 3 + [80]))
    for reg in (TOY_MODELS, METHODS, METRICS):
        for module, err in reg.import_errors.items():
            print(f"warning: {module} failed to import: {err.strip().splitlines()[-1]}", file=sys.stderr)
    return 0


def add_parser(sub, common) -> None:
    p = sub.add_parser("list", parents=[common], help="list toy models, methods and metrics")
    p.add_argument("what", nargs="?", default="all", choices=["all", "toys", "methods", "metrics"])
    p.set_defaults(fn=cmd_list)
