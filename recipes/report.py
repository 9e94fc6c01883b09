"""What recipes and benchmarks print and plot: markdown tables and saved figures."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table: a header of ``columns``, then one line per row (cells formatted with
    ``str``). ``align`` has one character per column: ``l`` (``---``, the default), ``r``
    (``---:``) or ``c`` (``:---:``)."""
    align = align or "l" * len(columns)
    if len(align) != len(columns) or set(align) - set(_RULES):
        raise ValueError(f"align needs one of l, r, c per column ({len(columns)}), got {align!r}")
    lines = ["| " + " | ".join(columns) + " |", "|" + "".join(_RULES[a] for a in align)]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row has {len(row)} cells for {len(columns)} columns: {row}")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


_RULES = {"l": "---|", "r": "---:|", "c": ":---:|"}


def fmt(value: Any, spec: str = ".3f") -> str:
    """``value`` formatted with ``spec``; an em dash for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def save_figure(fig: Any, path: Path, dpi: int = 120, grid: bool = True) -> None:
    """Save a matplotlib figure to ``path`` and close it; with ``grid``, every axes first gets a
    light grid and a small legend."""
    import matplotlib.pyplot as plt

    if grid:
        for ax in fig.axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
