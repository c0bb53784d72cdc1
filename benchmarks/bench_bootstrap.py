"""What the 95% intervals cost: the bootstrap of one (fold, shot) cell, 1000 resamples of 1000 episodes.

    python benchmarks/bench_bootstrap.py                      # PASCAL-5i-like cell: 5 classes, 1000 episodes
    python benchmarks/bench_bootstrap.py --classes 20 --queries 1000 --resamples 1000 --repeats 5

The episodes are made up (random pixel counts; ``--queries`` query images cycled over, as PASCAL-5i's 1000
test episodes cycle over a fold's few hundred images); the cost depends on their number, the classes and the
query images, not on the counts. Timed, best of ``--repeats``, in the same run:

* ``interval``: what test.py adds per cell, :func:`engine.bootstrap.bootstrap_samples` (class strata, query
  clusters, all resamples at once with NumPy) and the two percentile intervals;
* ``paired``: what compare.py does per cell, the same resamples applied to two runs;
* baseline ``meter loop``: the same resamples scored one at a time through the evaluator test.py uses
  (:class:`common.evaluation.IoUMeter`, one ``update`` and ``compute_iou`` per resample), as one would write it
  without the vectorised path.

The target (issue 24) is under 2 s per cell on the CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from common.evaluation import IoUMeter  # noqa: E402
from engine.bootstrap import bootstrap_samples, percentile_interval, plan_resamples, resampled_metrics  # noqa: E402
from engine.episode_records import Cell, EpisodeRecords  # noqa: E402


def made_up_cell(episodes: int, classes: int, queries: int, seed: int = 0) -> EpisodeRecords:
    """``episodes`` episodes of ``classes`` classes cycling over ``queries`` query images, random counts."""
    rng = np.random.default_rng(seed)
    query_index = np.arange(episodes) % queries
    union = rng.integers(1_000, 160_000, size=(episodes, 2))  # up to 400 x 400 pixels
    inter = (union * rng.uniform(0.0, 1.0, size=(episodes, 2))).astype(np.int64)
    supports = np.array([[f"s{i}"] for i in range(episodes)])
    return EpisodeRecords(Cell(0, 0, 1), tuple(range(classes)), query_index % classes,
                          np.array([f"q{q}" for q in query_index]), supports, inter, union)


def best_time(function: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def meter_loop(records: EpisodeRecords, resamples: int) -> np.ndarray:
    """The baseline: each resample's episodes (the same draws as the vectorised path) through an IoUMeter."""
    plan = plan_resamples(records, resamples)
    rows_of = {}
    for cls, names in zip(plan.class_ids, plan.clusters):
        for name in names:
            rows_of[cls, name] = np.flatnonzero((records.class_id == cls) & (records.query == name))
    inter = torch.as_tensor(records.intersection.T, dtype=torch.float32)
    union = torch.as_tensor(records.union.T, dtype=torch.float32)
    class_id = torch.as_tensor(records.class_id)
    out = np.empty((resamples, 2))
    for r in range(resamples):
        rows = np.concatenate([rows_of[cls, names[i]] for cls, names, draw in
                               zip(plan.class_ids, plan.clusters, plan.draws) for i in draw[r]])
        meter = IoUMeter(records.class_ids, len(records.class_ids))
        index = torch.as_tensor(rows)
        meter.update(inter[:, index], union[:, index], class_id[index])
        out[r] = meter.compute_iou()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=5, help="5: PASCAL-5i, 20: COCO-20i")
    parser.add_argument("--queries", type=int, default=346, help="query images (PASCAL-5i fold 0 lists 346)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(1)
    a = made_up_cell(args.episodes, args.classes, args.queries, seed=0)
    b = made_up_cell(args.episodes, args.classes, args.queries, seed=1)
    b = EpisodeRecords(a.cell, a.class_ids, a.class_id, a.query, a.supports, b.intersection, b.union)

    def interval() -> None:
        samples = bootstrap_samples(a, args.resamples)
        percentile_interval(samples[:, 0]), percentile_interval(samples[:, 1])

    def paired() -> None:
        plan = plan_resamples(a, args.resamples)
        percentile_interval(resampled_metrics(b, plan)[:, 0] - resampled_metrics(a, plan)[:, 0])

    baseline = best_time(lambda: meter_loop(a, args.resamples), max(1, args.repeats // 3))
    assert np.allclose(meter_loop(a, 50), bootstrap_samples(a, 50)), "the two paths disagree"
    print(f"{args.resamples} resamples of {args.episodes} episodes, {args.classes} classes, {args.queries} query "
          f"images, one CPU thread, best of {args.repeats}:")
    print(f"  baseline, meter loop:            {baseline:8.3f} s")
    for name, function in (("interval (test.py, per cell)", interval), ("paired (compare.py, per cell)", paired)):
        seconds = best_time(function, args.repeats)
        print(f"  {name:32s} {seconds:8.3f} s   {baseline / seconds:6.1f}x faster than the baseline   "
              f"target < 2 s: {'met' if seconds < 2 else 'MISSED'}")


if __name__ == "__main__":
    main()
