"""Plain-text pieces every leaderboard format shares: the cell marks, Markdown escaping and how a mean with
its interval reads (the interval at the mean's precision)."""

from __future__ import annotations

import re

from leaderboard.data import fmt
from leaderboard.stats import Stat

REF_MARK = "(ref)"
ERR_MARK = "✗"
CAP_MARK = "†"
UNCONVERGED_MARK = "~"  # runs whose training loss was still falling at the end (benchmark.convergence)

_MD_SPECIAL = {"\\": "\\\\", "|": "\\|", "<": "&lt;", ">": "&gt;"}
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


def md_escape(text: object) -> str:
    """A result-file string made safe for a Markdown table cell: line breaks become one space, ``|`` (and a
    backslash, which could otherwise cancel that escape) is backslash-escaped and ``<``/``>`` become entities."""
    return "".join(_MD_SPECIAL.get(ch, ch) for ch in _LINE_BREAKS.sub(" ", str(text)))


def stat_text(s: Stat, interval: bool = True) -> str:
    if s.mean is None:
        return "-"
    if not interval or s.low is None or s.high is None:
        return fmt(s.mean)
    return f"{fmt(s.mean)} {interval_text(s)}"


def interval_text(s: Stat) -> str:
    """``[low, high]`` at the mean's precision (a 0.996 mean never reads ``[1.00, 1.00]``)."""
    return f"[{fmt(s.low)}, {fmt(s.high)}]"
