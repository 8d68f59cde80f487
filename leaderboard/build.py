"""Regenerate every leaderboard artefact from a results folder alone (``pdbench leaderboard``).

Layout of the output folder (``leaderboard/`` for the committed board)::

    LEADERBOARD.md                Markdown: overall table, one table per tier, failed cells, toy models, methods
    leaderboard.csv  cells.csv    every statistic per table x method; every stored result, one row each
    index.html                    one static page, sortable and filterable, no server, no network
    latex/overall.tex tier<k>.tex booktabs tables for papers
    figures/*.png *.pdf           score by tier (95% CI), score vs wall time

Outputs are a pure function of the result files (no timestamps, fixed figure metadata), so regenerating
twice gives identical files and ``--check`` can tell CI whether the committed artefacts are stale.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmark.cache import atomic_write_bytes
from leaderboard.csv_tables import cells_csv, summary_csv
from leaderboard.data import Board, build_board
from leaderboard.figures import render_figures
from leaderboard.html_page import render_html
from leaderboard.latex import render_latex
from leaderboard.markdown import headline_markdown, render_markdown

README_START = "<!-- LEADERBOARD:START -->"
README_END = "<!-- LEADERBOARD:END -->"
MANAGED_DIRS = ("latex", "figures")  # folders whose files are all generated: stale ones are removed


def render_all(results: list[dict[str, Any]], problems: list[str] | None = None) -> tuple[Board, dict[str, bytes]]:
    """Relative path -> file bytes for every artefact."""
    board = build_board(results, problems or [])
    files: dict[str, bytes] = {
        "LEADERBOARD.md": render_markdown(board, figure=True).encode(),
        "leaderboard.csv": summary_csv(board).encode(),
        "cells.csv": cells_csv(results).encode(),
        "index.html": render_html(board).encode(),
    }
    files.update({f"latex/{k}": v.encode() for k, v in render_latex(board).items()})
    files.update({f"figures/{k}": v for k, v in render_figures(board).items()})
    return board, files


def stale_files(out: Path, files: dict[str, bytes]) -> list[str]:
    """Artefacts under ``out`` that differ from ``files``, are missing, or should no longer exist."""
    diff = [rel for rel, data in sorted(files.items()) if not (out / rel).is_file() or (out / rel).read_bytes() != data]
    for d in MANAGED_DIRS:
        if (out / d).is_dir():
            diff += sorted(
                f"{d}/{p.name} (no longer generated)"
                for p in (out / d).iterdir()
                if p.is_file() and f"{d}/{p.name}" not in files
            )
    return diff


def write_all(out: Path, files: dict[str, bytes]) -> list[Path]:
    """Write the artefacts (only those whose bytes changed) and remove stale generated files."""
    written = []
    for rel, data in sorted(files.items()):
        path = out / rel
        if path.is_file() and path.read_bytes() == data:
            continue
        atomic_write_bytes(path, data)
        written.append(path)
    for d in MANAGED_DIRS:
        if (out / d).is_dir():
            for p in sorted((out / d).iterdir()):
                if p.is_file() and f"{d}/{p.name}" not in files:
                    os.remove(p)
    return written


def readme_block(board: Board, figure: str) -> str:
    """The headline table and one figure, for the README between the LEADERBOARD markers."""
    return (
        f"{README_START}\n{headline_markdown(board)}\n\n"
        f"Overall {board.headline}, toy models with exact or strong ground truth; 95% bootstrap intervals "
        f"over seeds; `(ref)` = reference row. Per-tier tables: [LEADERBOARD.md](leaderboard/LEADERBOARD.md).\n\n"
        f"![score by tier]({figure})\n{README_END}"
    )


def update_readme(readme: Path, board: Board, figure: str = "leaderboard/figures/score_by_tier.png") -> bool:
    """Replace the text between the LEADERBOARD markers of ``readme``; True when the file changed."""
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} markers")
    new = text[:start] + readme_block(board, figure) + text[end + len(README_END) :]
    if new == text:
        return False
    atomic_write_bytes(readme, new.encode())
    return True
