"""The per-fold mIoU bar chart of a test sweep: ours beside the paper's, one panel per shot.

Each panel has a group of bars per fold and one for the mean; a bar is drawn only where there is a number
(a fold not run, or one the paper does not report, leaves its place empty). Our bars carry their 95% bootstrap
interval as an error bar when there is one. Drawn with matplotlib's object API on an Agg canvas, so no
global backend or pyplot state is touched.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Optional

from common.io import atomic_write_bytes
from data.benchmarks import NFOLDS
from engine.bootstrap import FoldIntervals
from engine.paper_results import FoldValues

COLORS = {"ours": "#1f77b4", "paper": "#b0b0b0"}
ERROR_COLOR = "#202020"  # our 95% intervals
PANEL_SIZE = (4.8, 3.6)  # inches per shot panel
DPI = 100


def _values(row: FoldValues) -> list[Optional[float]]:
    return list(row.folds) + [row.mean]


def _label(index: int, ours: FoldValues) -> str:
    """``fold F``, or ``mean`` (saying which folds ours averages when not all were run)."""
    if index < NFOLDS:
        return f"fold {index}"
    run = [str(f) for f, v in enumerate(ours.folds) if v is not None]
    if len(run) == NFOLDS:
        return "mean"
    return f"mean\n(ours over fold{'s' if len(run) > 1 else ''} {', '.join(run)})"


def write_miou_chart(panels: Mapping[int, tuple[FoldValues, FoldValues]], path: Path, *, title: str,
                     intervals: Optional[Mapping[int, FoldIntervals]] = None) -> Path:
    """Write the PNG chart of ``{shot: (ours, paper)}`` mIoU rows to ``path`` (atomically); returns ``path``.

    ``intervals``: ``{shot: our intervals}``, drawn as error bars on our bars. Groups with no number on
    either side in any panel (folds not run and not reported) are left out.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    keep = [i for i in range(NFOLDS + 1)
            if any(_values(row)[i] is not None for pair in panels.values() for row in pair)]
    shots = sorted(panels)
    fig = Figure(figsize=(PANEL_SIZE[0] * len(shots), PANEL_SIZE[1]), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(shots), squeeze=False)[0]
    intervals = intervals or {}
    highs = [i[1] for shot_intervals in intervals.values() for i in (*shot_intervals.folds, shot_intervals.mean)
             if i is not None]
    top = max([v for pair in panels.values() for row in pair for v in _values(row) if v is not None] + highs + [10.0])
    for ax, shot in zip(axes, shots):
        sides = dict(zip(("ours", "paper"), panels[shot]))
        drawn = [name for name, row in sides.items() if any(v is not None for v in _values(row))]
        width = 0.76 / max(len(drawn), 1)  # a side with no number at all leaves no gap beside the other
        handles = []
        for name, row in sides.items():
            values = _values(row)
            offset = (drawn.index(name) - (len(drawn) - 1) / 2) * width if name in drawn else 0.0
            xs = [x + offset for x, i in enumerate(keep) if values[i] is not None]
            heights = [values[i] for i in keep if values[i] is not None]
            bounds = [*intervals[shot].folds, intervals[shot].mean] if name == "ours" and shot in intervals else []
            kept = [bounds[i] for i in keep if values[i] is not None] if bounds else []
            with_intervals = bool(kept) and all(b is not None for b in kept)
            bars = ax.bar(xs, heights, width, color=COLORS[name])
            if with_intervals:
                # the interval as drawn from its ends (a percentile interval need not be centred on the value)
                ax.errorbar(xs, [(b[0] + b[1]) / 2 for b in kept], yerr=[(b[1] - b[0]) / 2 for b in kept], fmt="none",
                            ecolor=ERROR_COLOR, elinewidth=1, capsize=3)
                # the number sits above the interval's top, not on the error bar
                for x, b, h in zip(xs, kept, heights):
                    ax.annotate(f"{h:.1f}", (x, b[1]), xytext=(0, 2), textcoords="offset points", ha="center",
                                va="bottom", fontsize=7)
            else:
                ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
            label = name if heights else f"{name}: no numbers"
            handles.append(Patch(color=COLORS[name], label=label + (" (95% interval)" if with_intervals else "")))
        ax.set_xticks(range(len(keep)), [_label(i, panels[shot][0]) for i in keep], fontsize=8)
        ax.set_ylim(0, top * 1.3)
        ax.set_ylabel("mIoU (%)")
        ax.set_title(f"{shot}-shot", fontsize=10)
        ax.legend(handles=handles, fontsize=8, loc="upper left", ncols=2, frameon=False)
    fig.suptitle(f"{title}: mIoU per fold, ours vs paper", fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(buffer.getvalue(), path)
