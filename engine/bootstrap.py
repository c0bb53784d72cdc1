"""Bootstrap intervals of mIoU and FB-IoU over the episodes of a test pass, single and paired.

**What is resampled.** mIoU is a mean of per-class IoUs, each pooled over that class's episodes; the released
protocols fix how many episodes each class gets (PASCAL-5i and FSS-1000 query the split's images in turn;
COCO-20i draws the class per episode, so its counts vary a little). So the resampling is *stratified by
class*: each class keeps its number of episodes. Within a class, episodes that share a query image are
resampled together (a *cluster* bootstrap): PASCAL-5i's 1000 episodes query each of a fold's few hundred
test images about three times with other supports, and those repeats are not independent evidence. Where
every episode has its own query this is the plain episode bootstrap.

**The interval** is the percentile interval (2.5% and 97.5% quantiles, linear interpolation) of the
statistic over ``resamples`` resamples; the RNG is ``numpy.random.default_rng([BASE_SEED, seed, fold,
shot])``, fixed per cell, so a run's intervals are reproducible and two runs over the same episodes draw the
same resamples (the paired comparison, :mod:`engine.compare`, relies on it). Cells are resampled
independently; the interval of a mean over folds or seeds is the quantiles of the per-resample means.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from data.benchmarks import NFOLDS
from engine.episode_records import Cell, EpisodeRecords

BASE_SEED = 24  # fixed: intervals are a function of the episodes alone
DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95
METHOD = ("percentile bootstrap over episodes, stratified by class (each class keeps its episode count), "
          "episodes sharing a query image resampled together")

Interval = tuple[float, float]


@dataclass(frozen=True)
class FoldIntervals:
    """The 95% intervals of one table line: per fold 0..NFOLDS-1 and of the mean (``None``: no interval)."""

    folds: tuple[Optional[Interval], ...]
    mean: Optional[Interval]

    @classmethod
    def empty(cls) -> "FoldIntervals":
        """No interval anywhere (bootstrap off, or a line without numbers)."""
        return cls((None,) * NFOLDS, None)


@dataclass(frozen=True)
class ResamplePlan:
    """The resamples of one cell: per class, which of its query images each resample draws.

    Attributes:
        class_ids: the fold's classes, in the order of ``clusters`` and ``draws``.
        clusters: per class, its query image names (sorted; empty when the class has no episode).
        draws: per class, (R, M_c) indices into its M_c query images, drawn with replacement.
    """

    class_ids: tuple[int, ...]
    clusters: tuple[tuple[str, ...], ...]
    draws: tuple[np.ndarray, ...]

    @property
    def resamples(self) -> int:
        """R, the number of resamples."""
        return len(self.draws[0]) if self.draws else 0


def _rng(cell: Cell) -> np.random.Generator:
    return np.random.default_rng([BASE_SEED, cell.seed & 0xFFFFFFFF, cell.fold, cell.shot])


def _clusters(records: EpisodeRecords) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per class of ``records.class_ids``: (query names, (M_c, 4) int64 counts summed per query)."""
    counts = np.concatenate([records.intersection, records.union], axis=1)  # (N, 4)
    out = []
    for cls in records.class_ids:
        rows = np.flatnonzero(records.class_id == cls)
        names, inverse = np.unique(records.query[rows], return_inverse=True)
        sums = np.zeros((len(names), 4), dtype=np.int64)
        np.add.at(sums, inverse.reshape(-1), counts[rows])
        out.append((names, sums))
    return out


def plan_resamples(records: EpisodeRecords, resamples: int) -> ResamplePlan:
    """The fixed resamples of ``records``' cell (a function of its class and query lists and of the cell)."""
    rng = _rng(records.cell)
    clusters = _clusters(records)
    draws = tuple(rng.integers(0, len(names), size=(resamples, len(names))) if len(names)
                  else np.zeros((resamples, 0), dtype=np.int64) for names, _ in clusters)
    return ResamplePlan(class_ids=records.class_ids, clusters=tuple(tuple(map(str, n)) for n, _ in clusters),
                        draws=draws)


def resampled_metrics(records: EpisodeRecords, plan: ResamplePlan) -> np.ndarray:
    """(R, 2) mIoU and FB-IoU (percent) of each resample of ``plan`` applied to ``records``.

    ``records`` must have the episodes ``plan`` was made from (or the same classes and query images, which is
    what a paired comparison checks first).
    """
    clusters = _clusters(records)
    if tuple(tuple(map(str, n)) for n, _ in clusters) != plan.clusters:
        raise ValueError(f"{records.cell.label()}: the records do not have the plan's query images")
    sums = np.stack([sums[draw].sum(axis=1) if draw.shape[1] else np.zeros((len(draw), 4), np.int64)
                     for (_, sums), draw in zip(clusters, plan.draws)], axis=1).astype(np.float64)  # (R, C, 4)
    inter, union = sums[..., :2], sums[..., 2:]
    miou = (inter[..., 1] / np.maximum(union[..., 1], 1.0)).mean(axis=1) * 100
    with np.errstate(invalid="ignore", divide="ignore"):
        fb_iou = (inter.sum(axis=1) / union.sum(axis=1)).mean(axis=1) * 100
    fb_iou[~(union.sum(axis=1) > 0).all(axis=1)] = np.nan
    return np.stack([miou, fb_iou], axis=1)


def bootstrap_samples(records: EpisodeRecords, resamples: int = DEFAULT_RESAMPLES) -> np.ndarray:
    """(R, 2) mIoU and FB-IoU of ``resamples`` fixed resamples of one cell (see the module's docstring)."""
    return resampled_metrics(records, plan_resamples(records, resamples))


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> Optional[Interval]:
    """The ``confidence`` percentile interval of (R,) ``samples``; ``None`` for no samples or a NaN among them."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size == 0 or np.isnan(samples).any():
        return None
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def mean_samples(samples: Iterable[np.ndarray]) -> Optional[np.ndarray]:
    """The per-resample mean of several cells' (R, ...) samples (folds, seeds); ``None`` when there are none."""
    samples = list(samples)
    return np.mean(np.stack(samples), axis=0) if samples else None
