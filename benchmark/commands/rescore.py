"""``pdbench rescore RESULTS``: recompute every metric from the stored decompositions; no method runs.

After a metric changes (a new version, a new metric), this brings every ok result up to date in minutes
instead of re-running the grid. It holds the folder's lock, imports no plugin, and checks each stored
decomposition against the SHA-256 its result records before scoring it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_rescore(args: argparse.Namespace) -> int:
    from benchmark.lock import ResultsLock, ResultsLocked
    from benchmark.rescore import rescore_folder

    if not Path(args.results).is_dir():
        print(f"pdbench: error: {args.results} is not a results folder", file=sys.stderr)
        return 2
    try:
        with ResultsLock(args.results):
            summary = rescore_folder(args.results, compact=args.compact)
    except ResultsLocked as exc:
        print(f"pdbench: error: {exc}", file=sys.stderr)
        return 1
    for p in summary.problems:
        print(f"error: {p}", file=sys.stderr)
    print(
        f"re-scored {summary.rescored} result(s) from their stored decompositions in {summary.seconds:.1f} s "
        f"({summary.changed} whose stored metrics it did not reproduce within 1e-6, largest difference "
        f"{summary.max_diff:.3g}; {summary.compacted} compacted to float16; {summary.upgraded} brought to the current "
        f"schema); {len(summary.problems)} could not be re-scored"
    )
    if summary.changed:
        print(f"regenerate the leaderboard: pdbench leaderboard --results {args.results}")
    return 1 if summary.problems else 0


def add_parser(sub, common) -> None:
    p = sub.add_parser(
        "rescore", parents=[common], help="recompute every metric from the stored decompositions (no method runs)"
    )
    p.add_argument("results", type=Path, help="results folder")
    p.add_argument(
        "--compact",
        action="store_true",
        help="store large float32 decompositions as float16 (as new runs do), recording how far each score moved",
    )
    p.set_defaults(fn=cmd_rescore, load_plugins_here=False)
