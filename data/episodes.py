"""Episode sampling: which query, which supports, which class.

Evaluation (val/test) episodes replicate the released (HSNet's) sampler draw for draw. The released loaders call
``np.random.choice(list, 1, replace=False)`` on the global RNG, which ``test.py``/``train.py`` seed with
``fix_randseed(0)`` right before a single-process (``num_workers=0``), unshuffled pass; episode ``i`` is thus
the ``i``-th stretch of that stream. Here the same calls run on a private ``np.random.RandomState(seed)`` once,
when the dataset is built, so batch size, workers, sharding and the global RNG no longer matter.

``RandomState.choice(a, 1, replace=False)`` is ``a[permutation(len(a))[:1]]``, so drawing an index with
``choice(len(a), 1, replace=False)`` consumes the stream identically without converting ``a`` to an array.

Training episodes are fresh each epoch but reproducible: episode ``index`` of epoch ``epoch`` is drawn from
``np.random.default_rng([seed, epoch, index])``, a function of those three numbers alone, so any number of
workers (each with its own copy of the dataset) draws exactly the same episodes (``--episode-rng independent``,
the default).

``--episode-rng released`` draws them as the released ``train.py`` did (:func:`released_worker_episodes`): it
seeded NumPy once per epoch in the main process and loaded the batches with ``--nworker`` DataLoader workers,
which PyTorch before 1.9 forked without seeding NumPy, so every worker drew from the same NumPy state. COCO-20i
ignores the index, so each group of ``nworker`` consecutive batches repeats the same episodes; PASCAL-5i (and
FSS-1000) take the query from the index and only the supports from that shared stream.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from data.benchmarks import FSS_IMAGES_PER_CLASS

__all__ = ["EPISODE_RNGS", "Episode", "Pick", "coco_episode", "fss_support_names", "listed_episode", "released_choice",
           "released_pick", "released_worker_episodes", "train_pick"]

# How training episodes are drawn: "independent" (per (seed, epoch, index), the default) or "released" (the
# released train.py's shared NumPy stream per DataLoader worker, see released_worker_episodes).
EPISODE_RNGS = ("independent", "released")

Pick = Callable[[Sequence], Any]  # one uniform draw from a sequence: released_pick or train_pick


@dataclass(frozen=True)
class Episode:
    """One few-shot episode: a query image, ``shot`` support images (distinct from the query) and a class."""

    query: str
    supports: tuple[str, ...]
    class_id: int  # 0-based

    def as_json(self) -> list:
        """``[query, [supports...], class_id]`` (the golden-file format)."""
        return [self.query, list(self.supports), self.class_id]


def released_choice(rng: np.random.RandomState, items: Sequence):
    """``np.random.choice(items, 1, replace=False)[0]`` on ``rng``, consuming the stream identically."""
    return items[int(rng.choice(len(items), 1, replace=False)[0])]


def released_pick(rng: np.random.RandomState) -> Pick:
    """The draws of the released loaders from the NumPy stream ``rng`` (:func:`released_choice`)."""
    return functools.partial(released_choice, rng)


def train_pick(seed: int, epoch: int, index: int) -> Pick:
    """The draws of training episode ``index`` in ``epoch``: from a generator of those three numbers alone
    (independent of workers and batch size)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])
    return lambda items: items[int(rng.integers(len(items)))]


def fss_support_names(category: str) -> list[str]:
    """The support candidates of an FSS-1000 class: ``<category>/1`` .. ``<category>/10`` (HSNet's sampler draws
    these file names, whatever the folder holds)."""
    return [f"{category}/{i}" for i in range(1, FSS_IMAGES_PER_CLASS + 1)]


def listed_episode(pick: Pick, query: str, cls: int, classwise: Mapping[int, Sequence[str]], shot: int) -> Episode:
    """An episode of the released PASCAL-5i loader (HSNet's FSS-1000 loader alike): the query is given (by the
    index); the supports are drawn from ``classwise[cls]`` until ``shot`` of them differ from the query
    (repeats allowed), as released."""
    supports: list[str] = []
    while len(supports) < shot:
        name = pick(classwise[cls])
        if name != query:
            supports.append(name)
    return Episode(query, tuple(supports), int(cls))


def coco_episode(pick: Pick, class_ids: Sequence[int], classwise: Mapping[int, Sequence[str]],
                 shot: int) -> Episode:
    """An episode of the released COCO-20i loader (``load_frame``, which ignores the index): a class uniformly
    from ``class_ids``, a query uniformly from its images, then the supports."""
    cls = int(pick(class_ids))
    return listed_episode(pick, pick(classwise[cls]), cls, classwise, shot)


def released_worker_episodes(order: Sequence[int], *, batch_size: int, nworker: int, seed: int,
                             draw: Callable[[np.random.RandomState, int], Episode],
                             draws_use_index: bool = True) -> dict[int, Episode]:
    """One epoch's training episodes as the released ``train.py`` drew them with ``nworker`` DataLoader workers
    on PyTorch < 1.9: ``{index: episode}`` for every index of ``order``.

    The loader cuts ``order`` (the sampler's indices of the epoch) into batches of ``batch_size`` and hands
    batch ``b`` to worker ``b % nworker``, which loads its batches in turn. Each worker was forked from the main
    process right after that process seeded NumPy (``fix_randseed`` per epoch) and PyTorch did not reseed
    NumPy in workers before 1.9, so every worker starts from ``RandomState(seed)`` and ``draw(rng, index)``
    consumes its own copy of that stream. ``nworker`` 0 (the main process loads) is a single stream.

    ``draws_use_index`` False (COCO-20i: the released loader ignores the index) means that every worker's
    stream yields the same episodes, so batch ``k * nworker + w`` equals batch ``k * nworker`` for every worker
    ``w`` (the last, shorter batch takes the first episodes of its group); they are drawn once.

    Raises:
        ValueError: ``order`` holds an index twice (its two episodes would differ).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    streams = max(1, int(nworker))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    shared_rng, shared = np.random.RandomState(seed), []  # the one stream of index-free draws
    episodes: dict[int, Episode] = {}
    for worker in range(streams):
        rng = np.random.RandomState(seed)
        position = 0  # episodes this worker has drawn so far
        for batch in batches[worker::streams]:
            for index in batch:
                index = int(index)
                if draws_use_index:
                    episode = draw(rng, index)
                else:
                    while len(shared) <= position:
                        shared.append(draw(shared_rng, index))
                    episode = shared[position]
                position += 1
                if index in episodes:
                    raise ValueError(f"index {index} appears twice in the epoch's order")
                episodes[index] = episode
    return episodes
