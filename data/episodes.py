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

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from data.benchmarks import FSS_IMAGES_PER_CLASS

__all__ = [
    "EPISODE_RNGS",
    "Episode",
    "coco_eval_episodes",
    "coco_train_episode",
    "fss_support_names",
    "listed_eval_episodes",
    "listed_train_episode",
    "released_choice",
    "released_coco_episode",
    "released_listed_episode",
    "released_worker_episodes",
    "train_rng",
]

# How training episodes are drawn: "independent" (per (seed, epoch, index), the default) or "released" (the
# released train.py's shared NumPy stream per DataLoader worker, see released_worker_episodes).
EPISODE_RNGS = ("independent", "released")


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


def _released_supports(rng: np.random.RandomState, names: Sequence[str], query: str, shot: int) -> tuple[str, ...]:
    """The released support loop: draw until ``shot`` names differ from the query (repeats allowed)."""
    supports: list[str] = []
    while True:
        name = released_choice(rng, names)
        if name != query:
            supports.append(name)
        if len(supports) == shot:
            return tuple(supports)


def listed_eval_episodes(metadata: Sequence[tuple[str, int]], classwise: Mapping[int, Sequence[str]], shot: int,
                         n: int, seed: int = 0) -> list[Episode]:
    """The first ``n`` released val/test episodes for ``seed`` of a benchmark whose index selects the query:
    PASCAL-5i and FSS-1000.

    Episode ``i`` queries ``metadata[i % len(metadata)]`` and draws its supports from ``classwise[class]``.
    PASCAL-5i: the fold's val list in file order, supports from the class's listed images. FSS-1000: the
    split's images (sorted classes, then sorted file names), supports from :func:`fss_support_names` (HSNet's
    ``np.random.choice(range(1, 11), 1, replace=False)`` consumes the stream as a choice among 10 names does).
    """
    rng = np.random.RandomState(seed)
    return [released_listed_episode(rng, *metadata[idx % len(metadata)], classwise, shot) for idx in range(n)]


def fss_support_names(category: str) -> list[str]:
    """The support candidates of an FSS-1000 class: ``<category>/1`` .. ``<category>/10`` (HSNet's sampler draws
    these file names, whatever the folder holds)."""
    return [f"{category}/{i}" for i in range(1, FSS_IMAGES_PER_CLASS + 1)]


def coco_eval_episodes(class_ids: Sequence[int], classwise: Mapping[int, Sequence[str]], shot: int, n: int,
                       seed: int = 0) -> list[Episode]:
    """The first ``n`` released COCO-20i val/test episodes for ``seed``: a class uniformly from ``class_ids``,
    a query uniformly from its images, then the supports (the released loader ignores the index)."""
    rng = np.random.RandomState(seed)
    return [released_coco_episode(rng, class_ids, classwise, shot) for _ in range(n)]


def released_coco_episode(rng: np.random.RandomState, class_ids: Sequence[int], classwise: Mapping[int, Sequence[str]],
                          shot: int) -> Episode:
    """One episode of the released COCO-20i loader (``load_frame``) drawn from ``rng``: a class uniformly from
    ``class_ids``, a query uniformly from its images, then the supports."""
    cls = int(released_choice(rng, class_ids))
    query = released_choice(rng, classwise[cls])
    return Episode(query, _released_supports(rng, classwise[cls], query, shot), cls)


def released_listed_episode(rng: np.random.RandomState, query: str, cls: int,
                            classwise: Mapping[int, Sequence[str]], shot: int) -> Episode:
    """One episode of the released PASCAL-5i loader (HSNet's FSS-1000 loader alike): the query is given (by the
    index), the supports are drawn from ``classwise[cls]`` on ``rng``."""
    return Episode(query, _released_supports(rng, classwise[cls], query, shot), int(cls))


def train_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of training episode ``index`` in ``epoch`` (independent of workers and batch size)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


def _train_supports(rng: np.random.Generator, names: Sequence[str], query: str, shot: int) -> tuple[str, ...]:
    supports: list[str] = []
    while len(supports) < shot:  # the released rule: uniform draws, repeats allowed, never the query
        name = names[int(rng.integers(len(names)))]
        if name != query:
            supports.append(name)
    return tuple(supports)


def listed_train_episode(rng: np.random.Generator, query: str, cls: int, classwise: Mapping[int, Sequence[str]],
                         shot: int) -> Episode:
    """A PASCAL-5i or FSS-1000 training episode: the query is fixed by the index (as released), the supports are
    drawn from ``classwise[cls]``."""
    return Episode(query, _train_supports(rng, classwise[cls], query, shot), int(cls))


def coco_train_episode(rng: np.random.Generator, class_ids: Sequence[int], classwise: Mapping[int, Sequence[str]],
                       shot: int) -> Episode:
    """A COCO training episode: class, query and supports all random (the released loader ignores the index)."""
    cls = int(class_ids[int(rng.integers(len(class_ids)))])
    names = classwise[cls]
    query = names[int(rng.integers(len(names)))]
    return Episode(query, _train_supports(rng, names, query, shot), cls)


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
