"""A fold x shot sweep of test.py in the paper's layout, beside the paper's numbers.

Rows are shots, columns folds 0..3 and their mean, one table per metric (mIoU, FB-IoU). Each shot has three
lines: ours, the paper's (from :mod:`engine.paper_results`) and ours minus the paper's. A cell stays empty when
the fold was not run here or the paper gives no number; nothing is estimated. Our cells are printed as test.py
prints its final line (two decimals), so a cell can be checked against a separate run's output.

Our mean is the mean of our fold cells. The difference of the means is given only when all folds were run (the
paper's mean is over all of them).

With per-cell bootstrap samples (:mod:`engine.bootstrap`), our cells and the differences carry their 95%
interval, ``61.23 [60.10, 62.30]`` (the interval of the mean column: over the per-resample means of the
folds). With several ``--seeds``, our line is the mean over the seeds (its interval: from the seeds' joint
resamples, :func:`engine.bootstrap.seed_mean_samples`, which draw the same query images for every seed),
followed by one line per seed (with its cell's interval) and the seeds' standard deviation (``sd over
seeds``, n - 1 in the denominator).

:func:`write_outputs` writes ``results.json``, ``table.md``, ``table.csv`` and ``table.png`` (the per-fold
mIoU chart, :mod:`engine.chart`) into the run folder; test.py's docstring describes ``results.json``.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from common.io import atomic_write_text
from data.benchmarks import NFOLDS, TITLES
from engine.bootstrap import METHOD, FoldIntervals, Interval, mean_samples, percentile_interval
from engine.chart import write_miou_chart
from engine.episode_records import Cell
from engine.paper_results import METRICS, FoldValues, paper_row

OUTPUT_NAMES = {"results": "results.json", "markdown": "table.md", "csv": "table.csv", "chart": "table.png"}
LINES = ("ours", "paper", "diff")  # the three lines of a shot
LINE_TITLES = {"ours": "ours", "paper": "paper", "diff": "ours - paper"}
SD_LINE = "sd over seeds"
# The best seed per fold (its mean column: the mean of the folds' best seeds), shown only for the protocols whose
# repositories print it (engine.protocols: BAM, HDMNet, PI-CLIP); an optimistic statistic, never our line
BEST_LINE = "best seed (protocol's, optimistic)"
CSV_LINES = {SD_LINE: "seeds_sd", BEST_LINE: "seeds_best"}  # a line's name in table.csv where it differs (``seed S`` -> ``seedS``)


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
    seed: int = 0  # the episode seed (--seeds)
    class_ids: tuple[int, ...] = ()  # the fold's classes, which mIoU averages over
    class_names: dict[str, str] = field(default_factory=dict)  # 0-based class id (as a string) -> its name

    @property
    def cell(self) -> Cell:
        """(seed, fold, shot)."""
        return Cell(self.seed, self.fold, self.nshot)

    def as_dict(self) -> dict[str, Any]:
        """The run as plain JSON values, with ``per_class``: one ``{"class_id", "name", "iou"}`` per class."""
        entry = asdict(self)
        entry["per_class"] = [{"class_id": int(key), "name": self.class_names.get(key), "iou": value}
                              for key, value in sorted(self.per_class_iou.items(), key=lambda kv: int(kv[0]))]
        return entry

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> "RunResult":
        """The run of a ``results.json`` entry (:meth:`as_dict`'s keys; other keys are ignored)."""
        names = set(cls.__dataclass_fields__)
        values = {key: value for key, value in entry.items() if key in names}
        values["class_ids"] = tuple(values.get("class_ids", ()))
        return cls(**values)


@dataclass(frozen=True)
class TableRow:
    """One metric at one shot: per fold 0..NFOLDS-1 ours (``None``: not run), the paper's, and the difference."""

    metric: str  # a key of engine.paper_results.METRICS
    shot: int
    ours: FoldValues
    paper: FoldValues
    diff: FoldValues
    intervals: dict[str, FoldIntervals] = field(default_factory=dict)  # "ours", "diff", "seed S": 95% intervals
    seeds: dict[int, FoldValues] = field(default_factory=dict)  # per seed, with several --seeds
    seeds_sd: Optional[FoldValues] = None  # the seeds' standard deviation, with several --seeds
    seeds_best: Optional[FoldValues] = None  # the best seed per fold, for the protocols that report it

    def line(self, name: str) -> FoldValues:
        """``"ours"``, ``"paper"``, ``"diff"``, ``"seed S"`` or ``"sd over seeds"``."""
        if name.startswith("seed "):
            return self.seeds[int(name.split()[1])]
        line = {"ours": self.ours, "paper": self.paper, "diff": self.diff, SD_LINE: self.seeds_sd,
                BEST_LINE: self.seeds_best}[name]
        assert line is not None
        return line

    def lines(self) -> list[str]:
        """The row's lines, in print order."""
        return [*LINES, *(f"seed {s}" for s in self.seeds), *([SD_LINE] if self.seeds_sd is not None else []),
                *([BEST_LINE] if self.seeds_best is not None else [])]


def _minus(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _sd(values: Sequence[float]) -> Optional[float]:
    """Sample standard deviation (n - 1); ``None`` below two values."""
    if len(values) < 2:
        return None
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _fold_line(values: dict[int, float], samples: dict[int, Optional[np.ndarray]]) -> tuple[FoldValues, FoldIntervals]:
    """A line from ``{fold: value}`` and ``{fold: (R,) bootstrap samples or None}``: folds, mean, intervals."""
    line = FoldValues(tuple(values.get(fold) for fold in range(NFOLDS)), _mean(list(values.values())))
    if not samples or any(samples.get(fold) is None for fold in values):
        return line, FoldIntervals.empty()
    interval = FoldIntervals(tuple(percentile_interval(samples[f]) if f in values else None for f in range(NFOLDS)),
                             percentile_interval(mean_samples(samples[f] for f in values)))
    return line, interval


def _shift(interval: FoldIntervals, by: FoldValues, full: bool) -> FoldIntervals:
    """``interval - by`` per fold (empty where either is missing); the mean only when ``full``."""
    def minus(i: Optional[Interval], b: Optional[float]) -> Optional[Interval]:
        return None if i is None or b is None else (i[0] - b, i[1] - b)
    return FoldIntervals(tuple(minus(i, b) for i, b in zip(interval.folds, by.folds)),
                         minus(interval.mean, by.mean) if full else None)


def build_table(runs: Sequence[RunResult], benchmark: str, backbone: str, *, with_paper: bool = True,
                samples: Optional[dict[Cell, np.ndarray]] = None,
                seed_means: Optional[Mapping[tuple[int, int], np.ndarray]] = None,
                best_of_seeds: bool = False) -> list[TableRow]:
    """The table of ``runs`` (any folds and shots, each (seed, fold, shot) at most once), per metric then shot.

    ``with_paper=False`` leaves the paper's lines empty (data the paper's numbers do not apply to).
    ``samples``: (R, 2) bootstrap mIoU/FB-IoU per cell (:func:`engine.bootstrap.bootstrap_samples`); with
    them, our cells and the differences get intervals. Runs of several seeds: our line is their mean, and each
    seed gets a line. ``seed_means``: per (fold, shot) with several seeds, the (R, 2) samples of their mean
    (:func:`engine.bootstrap.seed_mean_samples` over the seeds of ``runs`` there); where one is missing, our
    line has no interval (the seeds' own samples, drawn independently, would make it too narrow).
    ``best_of_seeds``: with several seeds, a line with the best seed per fold (the protocols that report it).
    """
    samples = samples or {}
    seed_means = seed_means or {}
    seeds = list(dict.fromkeys(run.seed for run in runs))
    rows = []
    for column, metric in enumerate(METRICS):
        for shot in sorted({run.nshot for run in runs}):
            at_shot = [run for run in runs if run.nshot == shot]
            by_seed = {seed: {run.fold: float(getattr(run, metric)) for run in at_shot if run.seed == seed}
                       for seed in seeds}
            seed_samples = {seed: {run.fold: (samples[run.cell][:, column] if run.cell in samples else None)
                                   for run in at_shot if run.seed == seed} for seed in seeds}
            folds = sorted({run.fold for run in at_shot})
            by_fold = {fold: _mean([by_seed[s][fold] for s in seeds if fold in by_seed[s]]) for fold in folds}
            fold_samples = {}
            for fold in folds:
                parts = [seed_samples[s].get(fold) for s in seeds if fold in by_seed[s]]
                if len(parts) > 1:
                    joint = seed_means.get((fold, shot))
                    fold_samples[fold] = None if joint is None else joint[:, column]
                else:
                    fold_samples[fold] = None if parts[0] is None else mean_samples(parts)
            ours, interval = _fold_line(by_fold, fold_samples if samples else {})
            paper = paper_row(benchmark, backbone, shot, metric) if with_paper else FoldValues.empty()
            full = len(by_fold) == NFOLDS
            diff = FoldValues(tuple(_minus(o, p) for o, p in zip(ours.folds, paper.folds)),
                              _minus(ours.mean, paper.mean) if full else None)
            intervals = {}
            if interval != FoldIntervals.empty():
                intervals = {"ours": interval, "diff": _shift(interval, paper, full)}
            per_seed, sd, best = {}, None, None
            if len(seeds) > 1:
                for seed in seeds:
                    if by_seed[seed]:
                        per_seed[seed], seed_interval = _fold_line(by_seed[seed], seed_samples[seed] if samples else {})
                        if seed_interval != FoldIntervals.empty():  # even where the mean has none
                            intervals[f"seed {seed}"] = seed_interval
                sd = FoldValues(tuple(_sd([by_seed[s][f] for s in seeds if f in by_seed[s]]) for f in range(NFOLDS)),
                                _sd([line.mean for line in per_seed.values() if line.mean is not None]))
                if best_of_seeds:
                    best_folds = {f: max(by_seed[s][f] for s in seeds if f in by_seed[s]) for f in folds}
                    best = FoldValues(tuple(best_folds.get(f) for f in range(NFOLDS)), _mean(list(best_folds.values())))
            rows.append(TableRow(metric, shot, ours, paper, diff, intervals, per_seed, sd, best))
    return rows


def _number(line: str, value: float) -> str:
    """Ours as test.py prints it (``%.2f``), the paper's as reported, the difference signed."""
    if line == "paper":
        return str(value)
    return f"{value:+.2f}" if line == "diff" else f"{value:.2f}"


def _cell(line: str, value: Optional[float], interval: Optional[Interval] = None) -> str:
    """A table cell: the number, with its interval ``[low, high]`` when there is one."""
    if value is None:
        return ""
    text = _number(line, value)
    if interval is not None:
        text += f" [{_number(line, interval[0])}, {_number(line, interval[1])}]"
    return text


def _cells(row: TableRow, line: str, *, with_intervals: bool = False) -> list[str]:
    values = row.line(line)
    interval = row.intervals.get(line, FoldIntervals.empty()) if with_intervals else FoldIntervals.empty()
    return [_cell(line, v, i) for v, i in zip((*values.folds, values.mean), (*interval.folds, interval.mean))]


def _interval_cells(row: TableRow, line: str, side: int) -> list[str]:
    """The low (``side`` 0) or high (1) ends of a line's intervals, formatted as its numbers."""
    interval = row.intervals[line]
    return ["" if i is None else _number(line, i[side]) for i in (*interval.folds, interval.mean)]


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
            for i, line in enumerate(row.lines()):
                shot = f"{row.shot}-shot" if i == 0 else ""
                cells = _cells(row, line, with_intervals=True)
                parts.append(f"| {shot} | {LINE_TITLES.get(line, line)} | " + " | ".join(cells) + " |")
        parts.append("")
    parts += [f"- {note}" for note in notes]
    return "\n".join(parts).rstrip() + "\n"


def table_csv(rows: Sequence[TableRow]) -> str:
    """The same table as CSV: ``metric, shot, line, fold0..fold3, mean``; empty = no number.

    Lines: ``ours``, ``paper``, ``diff``; with intervals also ``ours_low``, ``ours_high``, ``diff_low``,
    ``diff_high`` after their line; with several seeds ``seedS`` (and ``seedS_low``/``_high``) per seed and
    ``seeds_sd``.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["metric", "shot", "line", *(f"fold{f}" for f in range(NFOLDS)), "mean"])
    for row in rows:
        for line in row.lines():
            name = CSV_LINES.get(line, line.replace(" ", ""))
            writer.writerow([row.metric, row.shot, name, *_cells(row, line)])
            if line in row.intervals:
                for side, end in enumerate(("low", "high")):
                    writer.writerow([row.metric, row.shot, f"{name}_{end}", *_interval_cells(row, line, side)])
    return out.getvalue()


def table_as_dict(rows: Sequence[TableRow]) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``{metric: {shot: {"ours"|"paper"|"diff": {"folds": [f0..f3], "mean": m}}}}`` with ``None`` for no number.

    With intervals, ``ours`` and ``diff`` also hold ``"interval": {"folds": [[low, high] or None, ...], "mean":
    [low, high] or None}``; with several seeds, ``"seeds": {"<seed>": {"folds", "mean"[, "interval"]}}`` and
    ``"seeds_sd": {"folds", "mean"}`` are added.
    """
    def entry(row: TableRow, line: str) -> dict[str, Any]:
        values = row.line(line)
        out: dict[str, Any] = {"folds": list(values.folds), "mean": values.mean}
        if line in row.intervals:
            interval = row.intervals[line]
            out["interval"] = {"folds": [None if i is None else list(i) for i in interval.folds],
                               "mean": None if interval.mean is None else list(interval.mean)}
        return out

    table: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        cell: dict[str, Any] = {line: entry(row, line) for line in LINES}
        if row.seeds:
            cell["seeds"] = {str(seed): entry(row, f"seed {seed}") for seed in row.seeds}
            cell["seeds_sd"] = entry(row, SD_LINE)
        if row.seeds_best is not None:
            cell["seeds_best"] = entry(row, BEST_LINE)
        table.setdefault(row.metric, {})[str(row.shot)] = cell
    return table


def table_notes(rows: Sequence[TableRow], paper_note: str, *, folds: bool = True, resamples: int = 0,
                seeds: Sequence[int] = (), protocol: Optional[str] = None) -> list[str]:
    """Notes under the table: what the intervals are (``resamples`` > 0), what our line is over several
    ``seeds``, which folds our mean covers (``folds``: the benchmark has folds), what an empty cell means, the
    paper's source; ``protocol``: the note on the test protocol (:func:`engine.protocols.protocol_note`)."""
    run = sorted({f for row in rows for f, v in enumerate(row.ours.folds) if v is not None})
    notes = []
    if resamples and any(row.intervals for row in rows):
        notes.append(f"[low, high]: 95% interval, {METHOD}; {resamples} resamples.")
    if len(seeds) > 1:
        notes.append(f"ours: the mean over the episode seeds {', '.join(map(str, seeds))}, each of which has its "
                     "line; sd over seeds: their standard deviation (n - 1).")
    if any(row.seeds_best is not None for row in rows):
        notes.append(f"{BEST_LINE}: per fold the highest of the seeds' numbers (its mean column: the mean of "
                     "those), as the protocol's repository prints it; it is biased upwards (the maximum of noisy "
                     "numbers), so compare the mean.")
    if protocol:
        notes.append(protocol)
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
    miou = [row for row in rows if row.metric == "miou"]
    write_miou_chart({row.shot: (row.ours, row.paper) for row in miou}, paths["chart"], title=title,
                     intervals={row.shot: row.intervals["ours"] for row in miou if "ours" in row.intervals})
    return paths
