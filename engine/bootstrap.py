"""Bootstrap intervals of mIoU and FB-IoU over the episodes of a test pass, single and paired.

**What is resampled.** mIoU is a mean of per-class IoUs, each pooled over that class's episodes; the released
protocols fix how many episodes each class gets (PASCAL-5i and FSS-1000 query the split's images in turn;
COCO-20i draws the class per episode, so its counts vary a little). So the resampling is *stratified by
class*: each class keeps its number of query images (its episode count can move a little where its images
have different numbers of episodes). Within a class, episodes that share a query image are
resampled together (a *cluster* bootstrap): PASCAL-5i's 1000 episodes query each of a fold's few hundred
test images about three times with other supports, and those repeats are not independent evidence. Where
every episode has its own query this is the plain episode bootstrap.

**The interval** is the percentile interval (2.5% and 97.5% quantiles, linear interpolation) of the
statistic over ``resamples`` resamples; the RNG is ``numpy.random.default_rng([BASE_SEED, seed, fold,
shot])``, fixed per cell, so a run's intervals are reproducible and two runs over the same episodes draw the
same resamples (the paired comparison, :mod:`engine.compare`, relies on it). The folds have other classes and
images, so their cells are resampled independently; the interval of the mean over folds is the quantiles of
the per-resample means of the folds.

**Several seeds** (:func:`plan_joint_resamples`, :func:`seed_mean_samples`). The seeds of a (fold, shot) are
not independent samples: on PASCAL-5i and FSS-1000 every seed queries the same images (the split list in
order) and only the supports change, so a hard image is hard in every seed. Resampling each seed with its own
draws would average that difficulty away and make the interval of the mean over seeds about sqrt(seeds) too
narrow. So one plan serves all the seeds of a (fold, shot): a resample draws query images, and every seed takes
the episodes it has of the drawn images. Its clusters are, per class, the union of the seeds' query images,
and within a class the images are stratified by the set of seeds that query them (resampled with replacement
within their stratum). Where all seeds query the same images (PASCAL-5i, FSS-1000) that is one stratum per
class, the joint cluster bootstrap. On COCO-20i each seed draws its own queries, so almost every image is in
one seed only and its stratum is that seed's images: the seeds are resampled independently, as they were
drawn, and an image two seeds happen to share is drawn for both. The strata keep every seed's number of query
images per class fixed in every resample, as the single-cell plan does; resampling the plain union instead
would let a seed's count of a class vary from resample to resample (on COCO-20i) and drop to none, which the
released formula scores as IoU 0. The plan's RNG is ``numpy.random.default_rng([BASE_SEED, fold, shot,
*sorted(seeds)])`` (a longer key than a cell's), fixed per (fold, shot) and set of seeds. A single seed keeps
its cell's plan, so its intervals are those of :func:`bootstrap_samples`; each seed's own interval (its
``seed S`` line) is still its cell's: only the mean over the seeds uses the joint plan.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from data.benchmarks import NFOLDS
from engine.episode_records import EpisodeRecords

BASE_SEED = 24  # fixed: intervals are a function of the episodes alone
DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95
METHOD = ("percentile bootstrap over episodes, stratified by class (each class keeps its number of query images), "
          "episodes sharing a query image resampled together, across the seeds of a mean over seeds too")

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
        clusters: per class, its query image names (sorted; empty when the class has no episode); for a joint
            plan, the union of the seeds' query images.
        draws: per class, (R, M_c) indices into its M_c query images, drawn with replacement; in a joint plan
            column j draws from image j's stratum (the images queried by the same seeds).
        members: a joint plan's, per class and image, the seeds whose episodes query it (sorted); empty for
            a single cell's plan.
    """

    class_ids: tuple[int, ...]
    clusters: tuple[tuple[str, ...], ...]
    draws: tuple[np.ndarray, ...]
    members: tuple[tuple[tuple[int, ...], ...], ...] = ()


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
    cell = records.cell
    rng = np.random.default_rng([BASE_SEED, cell.seed & 0xFFFFFFFF, cell.fold, cell.shot])
    clusters = _clusters(records)
    draws = tuple(rng.integers(0, len(names), size=(resamples, len(names))) if len(names)
                  else np.zeros((resamples, 0), dtype=np.int64) for names, _ in clusters)
    return ResamplePlan(class_ids=records.class_ids, clusters=tuple(tuple(map(str, n)) for n, _ in clusters),
                        draws=draws)


def resampled_metrics(records: EpisodeRecords, plan: ResamplePlan) -> np.ndarray:
    """(R, 2) mIoU and FB-IoU (percent) of each resample of ``plan`` applied to ``records``.

    ``records`` must have the episodes ``plan`` was made from (or the same classes and query images, which is
    what a paired comparison checks first); for a joint plan, those of one of its seeds.
    """
    clusters = _clusters(records)
    if plan.members:
        clusters = _on_union(records, clusters, plan)
    elif tuple(tuple(map(str, n)) for n, _ in clusters) != plan.clusters:
        raise ValueError(f"{records.cell.label()}: the records do not have the plan's query images")
    sums = np.stack([sums[draw].sum(axis=1) for (_, sums), draw in zip(clusters, plan.draws)],
                    axis=1).astype(np.float64)  # (R, C, 4)
    inter, union = sums[..., :2], sums[..., 2:]
    miou = (inter[..., 1] / np.maximum(union[..., 1], 1.0)).mean(axis=1) * 100
    with np.errstate(invalid="ignore", divide="ignore"):
        fb_iou = (inter.sum(axis=1) / union.sum(axis=1)).mean(axis=1) * 100
    fb_iou[~(union.sum(axis=1) > 0).all(axis=1)] = np.nan
    return np.stack([miou, fb_iou], axis=1)


def plan_joint_resamples(records: Sequence[EpisodeRecords], resamples: int) -> ResamplePlan:
    """One plan for the seeds of a (fold, shot): ``records``, one cell per seed (see the module's docstring).

    A single cell gets :func:`plan_resamples`' plan, draw for draw.

    Raises:
        ValueError: the cells are not of one fold and shot with the same classes, or repeat a seed.
    """
    records = list(records)
    if len(records) == 1:
        return plan_resamples(records[0], resamples)
    seeds = [r.cell.seed for r in records]
    if not records or len(set(seeds)) != len(seeds) or any(
            r.cell[1:] != records[0].cell[1:] or r.class_ids != records[0].class_ids for r in records):
        raise ValueError(f"a joint plan needs one cell per seed of one fold and shot, got "
                         f"{'; '.join(r.cell.label() for r in records) or 'none'}")
    first = records[0].cell
    per_seed = [_clusters(r) for r in records]
    rng = np.random.default_rng([BASE_SEED, first.fold, first.shot, *sorted(seed & 0xFFFFFFFF for seed in seeds)])
    clusters, draws, members = [], [], []
    for c in range(len(records[0].class_ids)):
        seen: dict[str, set[int]] = {}
        for seed, cells in zip(seeds, per_seed):
            for name in cells[c][0]:
                seen.setdefault(str(name), set()).add(seed)
        names = sorted(seen)
        member = [tuple(sorted(seen[name])) for name in names]
        draw = np.zeros((resamples, len(names)), dtype=np.int64)
        for stratum in sorted(set(member)):
            slots = np.array([j for j, m in enumerate(member) if m == stratum], dtype=np.int64)
            draw[:, slots] = slots[rng.integers(0, len(slots), size=(resamples, len(slots)))]
        clusters.append(tuple(names))
        draws.append(draw)
        members.append(tuple(member))
    return ResamplePlan(class_ids=records[0].class_ids, clusters=tuple(clusters), draws=tuple(draws),
                        members=tuple(members))


def _on_union(records: EpisodeRecords, clusters: list[tuple[np.ndarray, np.ndarray]],
              plan: ResamplePlan) -> list[tuple[np.ndarray, np.ndarray]]:
    """``clusters`` of one seed's ``records`` spread over a joint plan's images (zeros where it has none)."""
    seed = records.cell.seed
    error = ValueError(f"{records.cell.label()}: the records do not have the plan's query images")
    if records.class_ids != plan.class_ids:
        raise error
    out = []
    for (names, sums), union, member in zip(clusters, plan.clusters, plan.members):
        if list(map(str, names)) != [name for name, m in zip(union, member) if seed in m]:
            raise error
        spread = np.zeros((len(union), 4), dtype=np.int64)
        spread[np.searchsorted(np.asarray(union), names)] = sums
        out.append((np.asarray(union), spread))
    return out


def seed_mean_samples(records: Sequence[EpisodeRecords], resamples: int = DEFAULT_RESAMPLES) -> np.ndarray:
    """(R, 2) mIoU and FB-IoU of the mean over the seeds, per resample of their joint plan.

    ``records``: one cell per seed of one fold and shot. One cell: its :func:`bootstrap_samples`, unchanged.
    """
    records = list(records)
    plan = plan_joint_resamples(records, resamples)
    return mean_samples(resampled_metrics(r, plan) for r in records)


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
