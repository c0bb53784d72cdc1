"""compare.py's work: two test runs on the same episodes, and B - A with its paired bootstrap interval.

Both runs must have evaluated the same protocol: benchmark, folds, shots, seeds and, cell by cell, the same
episodes (class, query and supports of each); anything else is refused with one line saying what differs.
What may differ is what is being compared (checkpoint, backbone, ``--stage``, ``--masking``, image size...);
those differences are listed in the output.

For every (fold, shot) both runs are resampled with the *same* resamples
(:func:`engine.bootstrap.plan_joint_resamples`: fixed per (fold, shot) and seeds, stratified by class, query
images kept together), so each resample gives a paired difference B - A; the interval is the 2.5% and 97.5%
quantiles of those differences, and ``share_b_greater`` the share of resamples in which B scores higher. A
cell's value is the mean over the seeds, and with several seeds one resample draws the same query images for
all of them (they query the same images on PASCAL-5i and FSS-1000, so their differences are not independent);
with one seed the plan is the cell's own (:func:`engine.bootstrap.plan_resamples`). The mean column is the
mean over the folds, resample by resample. Comparing a run with itself gives exactly 0 with the interval
[0, 0].

Runs of different test protocols (``test.py --protocol``: other seeds, episode counts, label sizes) are refused
unless ``across_protocols`` is asked for: then only the benchmark, folds and shots must agree, each side's
number is its mean over its own seeds, and B - A is given without an interval (the episodes differ, so nothing
is paired); the output says so.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from common.errors import UserInputError
from common.io import atomic_write_text
from data.benchmarks import TITLES
from engine.bootstrap import (BASE_SEED, CONFIDENCE, DEFAULT_RESAMPLES, METHOD, mean_samples, percentile_interval,
                              plan_joint_resamples, resampled_metrics)
from engine.episode_records import Cell, EpisodeRecords, read_run, results_path, run_cells
from engine.paper_results import METRICS

COMPARE_NAMES = {"markdown": "compare.md", "json": "compare.json"}
PROTOCOL = ("benchmark", "folds", "nshots", "seeds")  # must be equal; the episode lists are checked too
ACROSS_PROTOCOLS = ("benchmark", "folds", "nshots")  # what runs of different protocols must still share
RELEASED_PROTOCOL = "hsnet"  # the protocol of runs made before --protocol existed
SETTINGS = ("backbone", "stage", "masking", "img_size", "load")  # may differ: what the comparison is about


class CompareError(UserInputError, ValueError):
    """The two runs cannot be compared (other protocol, other episodes, an unfinished run)."""


@dataclass(frozen=True)
class ComparedRun:
    """One side of the comparison: where it is, its ``results.json`` and its cells' episode records."""

    path: Path
    document: dict[str, Any]
    records: dict[Cell, EpisodeRecords]

    @property
    def seeds(self) -> list[int]:
        return list(self.document.get("seeds", [self.document.get("seed", 0)]))

    @property
    def protocol(self) -> str:
        """The run's ``--protocol`` (runs made before it existed: the released one)."""
        return (self.document.get("protocol") or {}).get("name", RELEASED_PROTOCOL)

    def value(self, cell: Cell, metric: str) -> float:
        """The cell's number as test.py printed it (unrounded)."""
        return float(run_cells(self.document)[cell][metric])


@dataclass(frozen=True)
class Difference:
    """B - A at one shot, for one fold (``fold`` None: the mean over the folds)."""

    metric: str
    shot: int
    fold: Optional[int]
    a: float
    b: float
    diff: float
    interval: Optional[tuple[float, float]]
    share_b_greater: float

    def as_dict(self) -> dict[str, Any]:
        """As written to ``compare.json`` (``fold`` "mean" for the mean over the folds)."""
        return {**asdict(self), "fold": "mean" if self.fold is None else self.fold,
                "interval": None if self.interval is None else list(self.interval)}


def load_test_run(path: Union[str, Path], side: str) -> ComparedRun:
    """Side ``side`` ("A" or "B"): a test.py run folder or its ``results.json``, finished, with its records."""
    path = Path(path).expanduser().resolve()
    try:
        document, records = read_run(path)
    except UserInputError as exc:
        raise CompareError(f"{side}: {exc}") from exc
    if document.get("complete") is False:
        cells = document.get("cells", {})
        raise CompareError(f"{side}: {results_path(path)} is an interrupted test run ({cells.get('finished')} of "
                           f"{cells.get('planned')} cells); finish it with test.py --resume first")
    return ComparedRun(path, document, records)


def check_protocol(a: ComparedRun, b: ComparedRun, across_protocols: bool = False) -> None:
    """Refuse two runs that did not evaluate the same protocol and episodes (one line says what differs);
    ``across_protocols``: runs of different ``--protocol`` presets need only share benchmark, folds and shots."""
    if across_protocols:
        for key in ACROSS_PROTOCOLS:
            if a.document.get(key) != b.document.get(key):
                raise CompareError(f"A and B cannot be compared even across protocols: {key} {a.document.get(key)} "
                                   f"(A) vs {b.document.get(key)} (B)")
        return
    if a.protocol != b.protocol:
        raise CompareError(f"A and B were tested under other protocols: {a.protocol} (A) vs {b.protocol} (B); "
                           "compare runs of one --protocol, or pass --across-protocols (means over seeds only, "
                           "no paired interval)")
    for key in PROTOCOL:
        value_a = a.seeds if key == "seeds" else a.document.get(key)
        value_b = b.seeds if key == "seeds" else b.document.get(key)
        if value_a != value_b:
            raise CompareError(f"A and B did not evaluate the same protocol: {key} {value_a} (A) vs {value_b} (B)")
    for cell in a.records:
        difference = a.records[cell].first_difference(b.records[cell])
        if difference:
            raise CompareError(f"A and B were tested on other episodes: {cell.label()}, {difference} "
                               "(A vs B); compare runs of the same --nepisodes, seeds and data")


def setting_differences(a: ComparedRun, b: ComparedRun) -> dict[str, list[Any]]:
    """``{setting: [A's, B's]}`` for the settings that differ between the runs."""
    return {key: [a.document.get(key), b.document.get(key)] for key in SETTINGS
            if a.document.get(key) != b.document.get(key)}


def same_checkpoints(a: ComparedRun, b: ComparedRun) -> bool:
    """Whether both runs tested the same checkpoint bytes (SHA-256) in every cell."""
    return [run.get("checkpoint_sha256") for run in a.document["runs"]] == \
        [run.get("checkpoint_sha256") for run in b.document["runs"]]


def compare_means(a: ComparedRun, b: ComparedRun) -> list[Difference]:
    """B - A of runs of different protocols: per metric, shot and fold (and over the folds) each side's mean over
    its own seeds; no interval (the episodes differ: nothing is paired), ``share_b_greater`` NaN."""
    check_protocol(a, b, across_protocols=True)
    return _differences(a, b, None)


def across_protocols(a: ComparedRun, b: ComparedRun) -> bool:
    """Whether A and B were tested under different ``--protocol`` presets."""
    return a.protocol != b.protocol


def compare_runs(a: ComparedRun, b: ComparedRun, resamples: int = DEFAULT_RESAMPLES) -> list[Difference]:
    """B - A per metric, shot and fold, and over the folds, with paired bootstrap intervals (same resamples)."""
    check_protocol(a, b)
    samples: dict[Cell, np.ndarray] = {}  # (R, 2) paired differences B - A, mIoU and FB-IoU
    for fold in a.document["folds"]:
        for shot in a.document["nshots"]:
            cells = [Cell(seed, fold, shot) for seed in a.seeds]
            plan = plan_joint_resamples([a.records[cell] for cell in cells], resamples)
            for cell in cells:
                samples[cell] = resampled_metrics(b.records[cell], plan) - resampled_metrics(a.records[cell], plan)
    return _differences(a, b, samples)


def _differences(a: ComparedRun, b: ComparedRun, samples: Optional[dict[Cell, np.ndarray]]) -> list[Difference]:
    """The rows of B - A, each side's number the mean over its own seeds; with ``samples`` (per cell, the (R, 2)
    paired differences) a row's interval comes from their means over the seeds, and over the folds."""
    folds = list(a.document["folds"])
    out = []
    for column, metric in enumerate(METRICS):
        for shot in a.document["nshots"]:
            per_fold = []
            for fold in folds:
                value_a = float(np.mean([a.value(Cell(seed, fold, shot), metric) for seed in a.seeds]))
                value_b = float(np.mean([b.value(Cell(seed, fold, shot), metric) for seed in b.seeds]))
                diffs = None if samples is None else \
                    mean_samples(samples[Cell(seed, fold, shot)][:, column] for seed in a.seeds)
                per_fold.append((value_a, value_b, diffs))
                out.append(_difference(metric, shot, fold, value_a, value_b, diffs))
            if len(folds) > 1:
                means_a, means_b, diffs = zip(*per_fold)
                out.append(_difference(metric, shot, None, float(np.mean(means_a)), float(np.mean(means_b)),
                                       None if samples is None else mean_samples(diffs)))
    return out


def _difference(metric: str, shot: int, fold: Optional[int], a: float, b: float,
                diffs: Optional[np.ndarray]) -> Difference:
    if diffs is None:  # unpaired: no interval
        return Difference(metric, shot, fold, a, b, b - a, None, float("nan"))
    share = float(np.mean(diffs > 0)) if not np.isnan(diffs).any() else float("nan")
    return Difference(metric, shot, fold, a, b, b - a, percentile_interval(diffs), share)


def compare_markdown(a: ComparedRun, b: ComparedRun, rows: Sequence[Difference], resamples: int) -> str:
    """``compare.md``: the runs, the protocol, what differs, and per metric a table of B - A."""
    doc = a.document
    seeds = ", ".join(map(str, a.seeds))
    episodes = sorted({len(r) for r in a.records.values()})
    across = across_protocols(a, b)
    title = TITLES.get(doc['benchmark'], doc['benchmark'])
    lines = [f"# B - A across protocols ({title})" if across else f"# B - A on the same episodes ({title})", "",
             f"- A: {results_path(a.path)}", f"- B: {results_path(b.path)}"]
    if across:
        lines += [f"- Protocols differ: {a.protocol} (A: seed(s) {seeds}), {b.protocol} (B: seed(s) "
                  f"{', '.join(map(str, b.seeds))}); folds {' '.join(map(str, doc['folds']))}, shots "
                  f"{' '.join(map(str, doc['nshots']))}.",
                  "- Across protocols (--across-protocols): each cell is the mean over the run's own seeds; the "
                  "episodes differ, so B - A has no paired interval and says nothing about significance."]
    else:
        lines.append(f"- Protocol {a.protocol} (the same for both, episode lists checked): folds "
                     f"{' '.join(map(str, doc['folds']))}, shots {' '.join(map(str, doc['nshots']))}, seed(s) "
                     f"{seeds}, {'/'.join(map(str, episodes))} episodes per cell.")
    for key, (value_a, value_b) in setting_differences(a, b).items():
        lines.append(f"- {key}: {value_a} (A), {value_b} (B)")
    lines.append("- Checkpoints: " + ("the same files in A and B (equal SHA-256)" if same_checkpoints(a, b)
                                      else "different files (SHA-256)"))
    for metric, name in METRICS.items():
        lines += ["", f"## {name} (%)", "", "| shot | fold | A | B | B - A [95% interval] | share of resamples B > A |",
                  "|---|---|---:|---:|---:|---:|"]
        for row in (r for r in rows if r.metric == metric):
            interval = "" if row.interval is None else f" [{row.interval[0]:+.2f}, {row.interval[1]:+.2f}]"
            fold = "mean" if row.fold is None else str(row.fold)
            share = "n/a" if np.isnan(row.share_b_greater) else f"{row.share_b_greater:.1%}"
            lines.append(f"| {row.shot}-shot | {fold} | {row.a:.2f} | {row.b:.2f} | {row.diff:+.2f}{interval} | "
                         f"{share} |")
    if across:
        lines += ["", "- A cell is the mean over the run's seeds; the mean row is the mean over the folds. No "
                  "interval: the runs were tested on other episodes."]
    else:
        lines += ["", f"- [low, high]: paired 95% interval of B - A, {METHOD}; {resamples} resamples, the same for "
                  "A and B.",
                  "- A cell is the mean over the seeds; the mean row is the mean over the folds, resample by "
                  "resample."]
    return "\n".join(lines) + "\n"


def compare_document(a: ComparedRun, b: ComparedRun, rows: Sequence[Difference], resamples: int) -> dict[str, Any]:
    """``compare.json``."""
    doc = a.document
    across = across_protocols(a, b)
    return {"a": str(results_path(a.path)), "b": str(results_path(b.path)),
            "protocol": {"name": a.protocol, "benchmark": doc["benchmark"], "folds": doc["folds"],
                         "nshots": doc["nshots"], "seeds": a.seeds,
                         "episodes": {f"{c.seed}/{c.fold}/{c.shot}": len(r) for c, r in a.records.items()}},
            "across_protocols": {"a": a.protocol, "b": b.protocol, "b_seeds": b.seeds,
                                 "compared": "the means over each run's own seeds, unpaired, no interval"}
            if across else None,
            "settings_differ": setting_differences(a, b), "same_checkpoints": same_checkpoints(a, b),
            "bootstrap": None if across else {"resamples": resamples, "confidence": CONFIDENCE, "method": METHOD,
                                              "seed": BASE_SEED, "paired": True},
            "rows": [row.as_dict() for row in rows]}


def write_comparison(out: Path, a: ComparedRun, b: ComparedRun, rows: Sequence[Difference],
                     resamples: int) -> dict[str, Path]:
    """Write ``compare.md`` and ``compare.json`` into ``out`` (created; atomic writes); returns their paths.

    Raises:
        CompareError: ``out`` is a file or cannot be created.
    """
    if out.exists() and not out.is_dir():
        raise CompareError(f"--out {out} is a file; give a folder for compare.md and compare.json")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CompareError(f"--out {out}: cannot create it ({exc.strerror or exc})") from exc
    paths = {key: out / name for key, name in COMPARE_NAMES.items()}
    atomic_write_text(compare_markdown(a, b, rows, resamples), paths["markdown"])
    atomic_write_text(json.dumps(compare_document(a, b, rows, resamples), indent=2) + "\n", paths["json"])
    return paths
