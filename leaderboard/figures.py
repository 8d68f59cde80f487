"""matplotlib figures: the score per tier for each method (bars with 95% bootstrap intervals), and per tier of
the ranked track the score against CPU seconds with its Pareto front. PNG for the web, PDF for papers.

Figures are drawn on a bare :class:`~matplotlib.figure.Figure` (no pyplot, so no global state is touched)
under a fixed style, and saved without dates or version strings, so the same results give byte-identical
files.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import FigureCanvasPdf
from matplotlib.figure import Figure

from leaderboard.data import Board, Row

STYLE = {
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "pdf.fonttype": 42,
    "svg.hashsalt": "pdbench",
    "path.simplify": False,
}
_METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}


def _colors(names: list[str]) -> dict[str, tuple[float, float, float, float]]:
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _text(name: str) -> str:
    """A result-file string as plain matplotlib text: ``$`` would start mathtext, line breaks add lines."""
    return " ".join(name.split()).replace("$", r"\$")


def _label(r: Row) -> str:
    return _text(r.method.name) + (" (ref)" if r.method.reference_row else "")


def score_by_tier(board: Board) -> Figure:
    """Grouped bars: one group per tier, one bar per method (mean over the tier's toy models), 95% CI bars."""
    tables = [t for t in board.tiers if t.tier is not None]
    methods = [r.method for r in board.overall.rows] or board.methods
    names = [m.name for m in methods]
    for m in board.methods:
        if m.name not in names:
            names.append(m.name)
    refs = {m.name for m in board.methods if m.reference_row}
    colors = _colors(names)
    fig = Figure(figsize=(min(12.0, max(6.0, 0.22 * len(tables) * len(names) + 2.5)), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for i, t in enumerate(tables):
            r = next((r for r in t.rows if r.method.name == name), None)
            if r is None or r.score.mean is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(r.score.mean)
            lo.append(r.score.mean - (r.score.low if r.score.low is not None else r.score.mean))
            hi.append((r.score.high if r.score.high is not None else r.score.mean) - r.score.mean)
        if not xs:
            continue
        ax.bar(
            xs,
            ys,
            width * 0.92,
            color=colors[name],
            label=_text(name) + (" (ref)" if name in refs else ""),
            hatch="//" if name in refs else None,
            edgecolor="white" if name in refs else None,
            linewidth=0,
        )
        ax.errorbar(xs, ys, yerr=np.array([lo, hi]), fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    ax.set_xticks(range(len(tables)))
    ax.set_xticklabels(
        [
            f"{t.track}\ntier {t.tier}" + ("\n(contested)" if t.note.startswith("ground truth contested") else "")
            for t in tables
        ]
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{_text(board.headline)} (mean over toy models, 95% CI)")
    ax.set_title("Score by tier", loc="left")
    ax.axhline(1.0, color="0.8", linewidth=0.6, zorder=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def _cpu_per_run(board: Board, r: Row, toys: list[str]) -> float | None:
    """Mean CPU seconds per run of ``r``'s method over the cells of ``toys``."""
    cells = [c for t in toys if (c := board.cell(r.method.name, t)) is not None and c.n]
    runs = sum(c.n for c in cells)
    return sum(c.cpu_time_s for c in cells) / runs if runs else None


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (less CPU, higher score), by CPU."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def score_vs_cpu(board: Board) -> Figure:
    """Per tier of the ranked track: score (95% CI) against mean CPU seconds per run, log scale, with the
    Pareto front (the methods that no other method beats on both score and compute; the oracle, which sees the
    ground truth, is drawn but not on the front)."""
    tables = [t for t in board.tiers if t.tier is not None and t.key.startswith("tier")] or [board.overall]
    colors = _colors([r.method.name for r in board.overall.rows])
    fig = Figure(figsize=(min(12.0, 4.2 * len(tables) + 0.5), 3.8))
    FigureCanvasAgg(fig)
    for k, table in enumerate(tables):
        ax = fig.add_subplot(1, len(tables), k + 1)
        toys = [t.name for t in table.toys]
        points = []
        for i, r in enumerate(r for r in table.rows if r.score.mean is not None):
            cpu = _cpu_per_run(board, r, toys)
            if cpu is None:
                continue
            x = max(cpu, 1e-3)
            if not r.method.sees_ground_truth:  # the oracle is a reference, not a point on the trade-off
                points.append((x, r.score.mean))
            lo = r.score.mean - (r.score.low if r.score.low is not None else r.score.mean)
            hi = (r.score.high if r.score.high is not None else r.score.mean) - r.score.mean
            ax.errorbar(
                [x],
                [r.score.mean],
                yerr=[[lo], [hi]],
                fmt="s" if r.method.reference_row else "o",
                color=colors.get(r.method.name, "grey"),
                mfc="white" if r.method.reference_row else colors.get(r.method.name, "grey"),
                capsize=2,
            )
            ax.annotate(
                _label(r),
                (x, r.score.mean),
                textcoords="offset points",
                xytext=(5, 4 if i % 2 == 0 else -10),
                fontsize=7,
            )
        front = _pareto(points)
        if len(front) > 1:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("CPU seconds per run (log scale, floored at 1e-3)", fontsize=8)
        if k == 0:
            ax.set_ylabel(f"{_text(board.headline)} (95% CI)")
        ax.set_title(_text(table.title), loc="left", fontsize=8)
    fig.suptitle("Score against compute (dashed: Pareto front)", x=0.01, ha="left", fontsize=9)
    fig.tight_layout()
    return fig


FIGURES = {"score_by_tier": score_by_tier, "score_vs_cpu": score_vs_cpu}


def render_figures(board: Board) -> dict[str, bytes]:
    """File name -> bytes: ``<figure>.png`` and ``<figure>.pdf`` for each figure."""
    out: dict[str, bytes] = {}
    with matplotlib.rc_context(STYLE):
        for name, make in FIGURES.items():
            fig = make(board)
            for ext, canvas in (("png", FigureCanvasAgg), ("pdf", FigureCanvasPdf)):
                buf = io.BytesIO()
                canvas(fig)
                fig.savefig(buf, format=ext, metadata=_METADATA[ext])
                out[f"{name}.{ext}"] = buf.getvalue()
    return out


def save_figures(board: Board, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in render_figures(board).items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths
