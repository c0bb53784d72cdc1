"""A fold x shot sweep of test.py in the paper's layout, beside the paper's numbers.

Rows are shots, columns folds 0..3 and their mean, one table per metric (mIoU, FB-IoU). Each shot has three
lines: ours, the paper's (from :mod:`engine.paper_results`) and ours minus the paper's. A cell stays empty when
the fold was not run here or the paper gives no number; nothing is estimated. Our cells are printed as test.py
prints its final line (two decimals), so a cell can be checked against a separate run's output.

Our mean is the mean of our fold cells. The difference of the means is given only when all folds were run (the
paper's mean is over all of them).

:func:`write_outputs` writes ``results.json``, ``table.md``, ``table.csv`` and ``table.png`` (the per-fold
mIoU chart, :mod:`engine.chart`) into the run folder; test.py's docstring describes ``results.json``.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from common.io import atomic_write_text
from data.benchmarks import NFOLDS, TITLES
from engine.chart import write_miou_chart
from engine.paper_results import METRICS, FoldValues, paper_row

OUTPUT_NAMES = {"results": "results.json", "markdown": "table.md", "csv": "table.csv", "chart": "table.png"}
LINES = ("ours", "paper", "diff")  # the three lines of a shot
LINE_TITLES = {"ours": "ours", "paper": "paper", "diff": "ours - paper"}


@dataclass(frozen=True)
class RunResult:
    """What one (fold, shot) test run measured, with which checkpoint."""

    fold: int
    nshot: int
    checkpoint: str  # absolute path of the file tested
    checkpoint_sha256: str
    miou: float  # percent, as printed on the final line
    fb_iou: float
    episodes: int
    per_class_iou: dict[str, float]  # 0-based class id (as a string) -> foreground IoU, percent

    def as_dict(self) -> dict[str, Any]:
        """The run as plain JSON values."""
        return asdict(self)


@dataclass(frozen=True)
class TableRow:
    """One metric at one shot: per fold 0..NFOLDS-1 ours (``None``: not run), the paper's, and the difference."""

    metric: str  # a key of engine.paper_results.METRICS
    shot: int
    ours: FoldValues
    paper: FoldValues
    diff: FoldValues

    def line(self, name: str) -> FoldValues:
        """``"ours"``, ``"paper"`` or ``"diff"``."""
        return {"ours": self.ours, "paper": self.paper, "diff": self.diff}[name]


def _minus(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


def build_table(runs: Sequence[RunResult], benchmark: str, backbone: str, *, with_paper: bool = True
                ) -> list[TableRow]:
    """The table of ``runs`` (any folds and shots, each (fold, shot) at most once), per metric then shot.

    ``with_paper=False`` leaves the paper's lines empty (data the paper's numbers do not apply to).
    """
    rows = []
    for metric in METRICS:
        for shot in sorted({run.nshot for run in runs}):
            by_fold = {run.fold: float(getattr(run, metric)) for run in runs if run.nshot == shot}
            ours = FoldValues(tuple(by_fold.get(fold) for fold in range(NFOLDS)),
                            sum(by_fold.values()) / len(by_fold))
            paper = paper_row(benchmark, backbone, shot, metric) if with_paper else FoldValues.empty()
            diff = FoldValues(tuple(_minus(o, p) for o, p in zip(ours.folds, paper.folds)),
                            _minus(ours.mean, paper.mean) if len(by_fold) == NFOLDS else None)
            rows.append(TableRow(metric, shot, ours, paper, diff))
    return rows


def _cell(line: str, value: Optional[float]) -> str:
    """Ours as test.py prints it (``%.2f``), the paper's as reported, the difference signed."""
    if value is None:
        return ""
    return {"ours": f"{value:.2f}", "paper": str(value), "diff": f"{value:+.2f}"}[line]


def _cells(row: TableRow, line: str) -> list[str]:
    values = row.line(line)
    return [_cell(line, v) for v in values.folds] + [_cell(line, values.mean)]


def table_title(benchmark: str, backbone: str, *, synthetic: bool = False) -> str:
    """``IMR-HSNet, PASCAL-5i, vgg16`` (``PASCAL-5i layout, synthetic data`` for ``synthetic``)."""
    name = TITLES.get(benchmark, benchmark) + (" layout, synthetic data" if synthetic else "")
    return f"IMR-HSNet, {name}, {backbone}"


def table_markdown(rows: Sequence[TableRow], *, title: str, notes: Iterable[str] = ()) -> str:
    """One Markdown table per metric (rows: shots x {ours, paper, ours - paper}; columns: folds and mean)."""
    header = "| shot | | " + " | ".join(f"fold {f}" for f in range(NFOLDS)) + " | mean |"
    rule = "|---|---|" + "---:|" * (NFOLDS + 1)
    parts = [f"# {title}: ours and the paper's", ""]
    for metric, name in METRICS.items():
        parts += [f"## {name} (%)", "", header, rule]
        for row in (r for r in rows if r.metric == metric):
            for i, line in enumerate(LINES):
                shot = f"{row.shot}-shot" if i == 0 else ""
                parts.append(f"| {shot} | {LINE_TITLES[line]} | " + " | ".join(_cells(row, line)) + " |")
        parts.append("")
    parts += [f"- {note}" for note in notes]
    return "\n".join(parts).rstrip() + "\n"


def table_csv(rows: Sequence[TableRow]) -> str:
    """The same table as CSV: ``metric, shot, line (ours|paper|diff), fold0..fold3, mean``; empty = no number."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["metric", "shot", "line", *(f"fold{f}" for f in range(NFOLDS)), "mean"])
    for row in rows:
        for line in LINES:
            writer.writerow([row.metric, row.shot, line, *_cells(row, line)])
    return out.getvalue()


def table_as_dict(rows: Sequence[TableRow]) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``{metric: {shot: {"ours"|"paper"|"diff": {"folds": [f0..f3], "mean": m}}}}`` with ``None`` for no number."""
    table: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for row in rows:
        table.setdefault(row.metric, {})[str(row.shot)] = {
            line: {"folds": list(row.line(line).folds), "mean": row.line(line).mean} for line in LINES}
    return table


def table_notes(rows: Sequence[TableRow], paper_note: str, *, folds: bool = True) -> list[str]:
    """Notes under the table: which folds our mean covers (``folds``: the benchmark has folds), what an empty
    cell means, the paper's source."""
    run = sorted({f for row in rows for f, v in enumerate(row.ours.folds) if v is not None})
    notes = []
    if folds and len(run) < NFOLDS:
        notes.append(f"Our mean is over fold(s) {', '.join(map(str, run))} only; the paper's is over all "
                     f"{NFOLDS} folds, so no difference of the means is given.")
    notes.append("An empty cell: the fold was not run here, or the paper gives no number for it.")
    notes.append(f"The paper's numbers: {paper_note}")
    return notes


def write_outputs(run_dir: Path, document: dict[str, Any], rows: Sequence[TableRow], *, title: str,
                  notes: Sequence[str]) -> dict[str, Path]:
    """Write ``results.json`` (``document``), ``table.md``, ``table.csv`` and ``table.png``; returns their paths."""
    paths = {key: run_dir / name for key, name in OUTPUT_NAMES.items()}
    atomic_write_text(json.dumps(document, indent=2) + "\n", paths["results"])
    atomic_write_text(table_markdown(rows, title=title, notes=notes), paths["markdown"])
    atomic_write_text(table_csv(rows), paths["csv"])
    write_miou_chart({row.shot: (row.ours, row.paper) for row in rows if row.metric == "miou"}, paths["chart"],
                     title=title)
    return paths
