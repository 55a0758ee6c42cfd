"""The report's PNG figures, drawn with matplotlib's Agg canvas (no display, no global pyplot state)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rft_fast.report.analyses import ordered
from rft_fast.report.rows import Row

BORDA_TOP = 20  # bars per Borda chart: the full 80 (backbone, loss) rows are unreadable


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    return path


def slug(text: str) -> str:
    """A file-name-safe form of a protocol name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def borda_chart(ranking: Sequence[dict[str, Any]], protocol: str, path: Path) -> Path:
    """Horizontal bars of Borda points for the best BORDA_TOP (backbone, loss) rows, best on top."""
    shown = list(ranking[:BORDA_TOP])[::-1]
    fig = Figure(figsize=(8, 1.2 + 0.3 * len(shown)))
    ax = fig.add_subplot()
    ax.barh([f"{e['backbone']} ({e['loss']})" for e in shown], [e["points"] for e in shown], color="tab:blue")
    ax.set_xlabel("Borda points")
    ax.set_title(f"Borda count, {protocol}" + (f" (top {BORDA_TOP})" if len(ranking) > BORDA_TOP else ""))
    ax.tick_params(axis="y", labelsize=7)
    return _save(fig, path)


def clean_vs_linf(rows: Sequence[Row], path: Path) -> Path:
    """Clean against Linf accuracy, one colour per architecture type (rows lacking either are left out)."""
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    have = [r for r in rows if r.clean is not None and r.Linf is not None]
    for arch in ordered("arch", {r.arch for r in have}):
        points = [r for r in have if r.arch == arch]
        ax.scatter([100 * r.clean for r in points], [100 * r.Linf for r in points], label=arch, s=18, alpha=0.8)
    if have:
        ax.legend(title="architecture")
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("Linf AutoAttack accuracy (%)")
    ax.set_title(f"Clean vs Linf ({len(have)} configurations)")
    return _save(fig, path)
