"""Regenerate every leaderboard artefact from a results folder alone (``pdbench leaderboard``).

Layout of the output folder (``leaderboard/`` for the committed board)::

    LEADERBOARD.md                Markdown: overall table, ranking robustness, one table per tier, one compact
                                  table per metric, failed cells, toy models, methods
    leaderboard.csv  cells.csv    every statistic per table x method; every stored result, one row each
    metrics.csv                   every metric per (toy model, method) and per method overall, long format
    robustness.csv                ranks per criterion, mean ranks, Kendall tau-b, order flips, long format
    index.html                    one static page, sortable and filterable, a metric selector; no network
    latex/overall.tex tier<k>.tex booktabs tables for papers (the headline, or ``--metric NAME``)
    latex/robustness.tex          the ranks under every ranking criterion
    figures/*.png *.pdf           score by tier (95% CI), score vs wall time

    .pdbench-leaderboard          the marker: this folder is written by `pdbench leaderboard`, and these are its files

Outputs are a pure function of the result files (no timestamps, fixed figure metadata), so regenerating
twice gives identical files and ``--check`` can tell CI whether the committed artefacts are stale.

The output folder is owned through its marker file (:data:`MARKER`), which lists every file the last run
wrote. :func:`write_all` writes only into a folder that is new, empty (but for the results folder it reads),
marked, or the ``leaderboard/`` package folder itself, and on regeneration deletes only files the previous
marker lists, never a file it did not write.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from benchmark.files import atomic_write_bytes
from leaderboard.csv_tables import cells_csv, metrics_csv, robustness_csv, summary_csv
from leaderboard.data import Board, build_board
from leaderboard.figures import render_figures
from leaderboard.html_page import render_html
from leaderboard.latex_tables import render_tables
from leaderboard.markdown import headline_markdown, render_markdown

README_START = "<!-- LEADERBOARD:START -->"
README_END = "<!-- LEADERBOARD:END -->"
MARKER = ".pdbench-leaderboard"
MARKER_HEADER = (
    "# Written by `pdbench leaderboard`: this folder holds its output, and these are the files it generated.\n"
    "# Regenerating deletes only listed files that are no longer generated; keep this file to keep that so.\n"
)
PACKAGE_DIR = Path(__file__).resolve().parent  # the committed board: leaderboard/ beside leaderboard/results


class OutputFolderError(ValueError):
    """An output folder that ``pdbench leaderboard`` does not own (not empty, no marker file)."""


def render_all(
    results: list[dict[str, Any]], problems: list[str] | None = None, metric: str | None = None
) -> tuple[Board, dict[str, bytes]]:
    """Relative path -> file bytes for every artefact; ``metric`` picks the LaTeX tables' metric (default: the
    headline; :class:`~leaderboard.latex_tables.UnknownMetricError` where the results do not hold it)."""
    board = build_board(results, problems or [])
    files: dict[str, bytes] = {
        "LEADERBOARD.md": render_markdown(board, figure=True).encode(),
        "leaderboard.csv": summary_csv(board).encode(),
        "cells.csv": cells_csv(results).encode(),
        "metrics.csv": metrics_csv(board).encode(),
        "robustness.csv": robustness_csv(board).encode(),
        "index.html": render_html(board).encode(),
    }
    files.update({f"latex/{k}": v.encode() for k, v in render_tables(board, metric).items()})
    files.update({f"figures/{k}": v for k, v in render_figures(board).items()})
    return board, files


def marker_bytes(files: Iterable[str]) -> bytes:
    """The marker file listing ``files`` (relative POSIX paths), sorted, after a short header."""
    return (MARKER_HEADER + "".join(f"{rel}\n" for rel in sorted(files))).encode()


def read_marker(out: Path) -> list[str] | None:
    """The files the marker of ``out`` lists (safe relative paths only), or None when there is no marker."""
    try:
        text = (out / MARKER).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise OutputFolderError(f"cannot read the marker {out / MARKER}: {exc}") from exc
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#") and _safe(ln.strip())]


def _safe(rel: str) -> bool:
    """A marker entry that names a file inside the folder: relative, no ``..``, not the marker itself."""
    p = PurePosixPath(rel)
    return not p.is_absolute() and ".." not in p.parts and "\\" not in rel and rel not in ("", ".", MARKER)


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_output_folder(out: Path, results: Path | None = None) -> list[str]:
    """The files a previous run wrote into ``out`` (from its marker), after checking that ``out`` may be written.

    ``out`` may be missing, empty, hold only the results folder (``results``, or ``out/results`` when
    ``results`` is not given: ``pdbench leaderboard --results X/results`` writes into X), carry the marker,
    or be the ``leaderboard/`` package folder; anything else raises :class:`OutputFolderError`."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise OutputFolderError(f"the output folder {out} exists and is not a folder")
    listed = read_marker(out)
    if listed is not None:  # never the results read, even where the marker lists them
        return [rel for rel in listed if not any(_inside(out / rel, r) for r in (out / "results", results))]
    if out.resolve() == PACKAGE_DIR:
        return []
    inputs = {(out / "results").resolve()} | ({results.resolve()} if results is not None else set())
    others = sorted(p.name for p in out.iterdir() if p.resolve() not in inputs)
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise OutputFolderError(
            f"the output folder {out} is not empty ({shown}) and has no {MARKER} marker, so `pdbench "
            "leaderboard` did not create it; refusing to write into it (and to delete anything there). "
            "Choose a new or empty folder with --out, or, if it holds an earlier leaderboard that may be "
            f"overwritten, create an empty {MARKER} file in it."
        )
    return []


def stale_files(out: Path, files: dict[str, bytes]) -> list[str]:
    """Artefacts under ``out`` that differ from ``files`` or are missing, files the marker lists that are no
    longer generated, and the marker itself when it is missing or out of date."""
    diff = [rel for rel, data in sorted(files.items()) if not (out / rel).is_file() or (out / rel).read_bytes() != data]
    try:
        listed = read_marker(out) if out.is_dir() else None
    except OutputFolderError:  # an unreadable marker: report it as out of date
        listed = []
    diff += sorted(f"{rel} (no longer generated)" for rel in listed or [] if rel not in files and (out / rel).is_file())
    marker = out / MARKER
    if not marker.is_file() or marker.read_bytes() != marker_bytes(files):
        diff.append(f"{MARKER} ({'missing' if listed is None else 'out of date'})")
    return diff


def write_all(out: Path, files: dict[str, bytes], results: Path | None = None) -> list[Path]:
    """Write the artefacts into ``out`` (only those whose bytes changed) with the marker listing them, and
    delete the files the previous marker listed that are no longer generated.

    Raises :class:`OutputFolderError`, writing nothing, where ``out`` is not the leaderboard's to write
    (:func:`check_output_folder`; ``results`` is the results folder read, which may lie inside ``out``)."""
    bad = sorted(rel for rel in files if not _safe(rel))
    if bad:
        raise ValueError(f"artefact paths must be relative and inside the output folder: {bad}")
    previous = check_output_folder(out, results)
    written = []
    for rel, data in sorted({**files, MARKER: marker_bytes(files)}.items()):
        path = out / rel
        if path.is_file() and path.read_bytes() == data:
            continue
        atomic_write_bytes(path, data)
        if rel != MARKER:
            written.append(path)
    for rel in sorted(set(previous) - set(files)):
        path = out / rel
        if path.is_file() and not path.is_symlink():
            os.remove(path)
            _remove_empty_parents(path.parent, out)
    return written


def _remove_empty_parents(folder: Path, out: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``out`` while they are empty."""
    while folder != out and _inside(folder, out):
        try:
            folder.rmdir()
        except OSError:  # not empty
            return
        folder = folder.parent


def readme_block(board: Board, figure: str) -> str:
    """The headline table and one figure, for the README between the LEADERBOARD markers."""
    return (
        f"{README_START}\n{headline_markdown(board)}\n\n"
        f"Overall {board.headline} on the {board.overall.track} track, toy models with exact or strong ground "
        f"truth; 95% bootstrap intervals over runs (toy instances x method seeds); `(ref)` = reference row. "
        f"Reproduction and per-tier tables: [LEADERBOARD.md](leaderboard/LEADERBOARD.md).\n\n"
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
