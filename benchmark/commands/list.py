"""``pdbench list``: the registered toy models, methods and metrics."""

from __future__ import annotations

import argparse
import sys

from tabulate import tabulate

from benchmark.registry import METHODS, METRICS, TOY_MODELS


def cmd_list(args: argparse.Namespace) -> int:
    what = args.what
    if what in ("toys", "all"):
        rows = []
        for name in TOY_MODELS.names():
            spec = TOY_MODELS.get(name)().spec
            rows.append([name, spec.tier, spec.gt_status, ", ".join(spec.decomposed), spec.description])
        print(tabulate(sorted(rows, key=lambda r: (r[1], r[0])),
                       headers=["toy model", "tier", "ground truth", "decomposed", "description"]))
        print()
    if what in ("methods", "all"):
        rows = []
        for name, cls in METHODS.items():
            flags = "reference row" + (", sees ground truth" if cls.sees_ground_truth else "") \
                if cls.reference_row else ""
            rows.append([name, cls.version, flags, cls.paper])
        print(tabulate(rows, headers=["method", "version", "", "paper"]))
        print()
    if what in ("metrics", "all"):
        rows = [[n, m.version, "higher" if m.higher_is_better else "lower", m.description]
                for n, m in METRICS.items()]
        print(tabulate(rows, headers=["metric", "version", "better", "definition"], maxcolwidths=[None] * 3 + [80]))
    for reg in (TOY_MODELS, METHODS, METRICS):
        for module, err in reg.import_errors.items():
            print(f"warning: {module} failed to import: {err.strip().splitlines()[-1]}", file=sys.stderr)
    return 0


def add_parser(sub, common) -> None:
    p = sub.add_parser("list", parents=[common], help="list toy models, methods and metrics")
    p.add_argument("what", nargs="?", default="all", choices=["all", "toys", "methods", "metrics"])
    p.set_defaults(fn=cmd_list)
