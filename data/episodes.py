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
workers (each with its own copy of the dataset) draws exactly the same episodes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from data.benchmarks import FSS_IMAGES_PER_CLASS

__all__ = [
    "Episode",
    "coco_eval_episodes",
    "coco_train_episode",
    "fss_support_names",
    "listed_eval_episodes",
    "listed_train_episode",
    "released_choice",
    "train_rng",
]


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
    episodes = []
    for idx in range(n):
        query, cls = metadata[idx % len(metadata)]
        episodes.append(Episode(query, _released_supports(rng, classwise[cls], query, shot), int(cls)))
    return episodes


def fss_support_names(category: str) -> list[str]:
    """The support candidates of an FSS-1000 class: ``<category>/1`` .. ``<category>/10`` (HSNet's sampler draws
    these file names, whatever the folder holds)."""
    return [f"{category}/{i}" for i in range(1, FSS_IMAGES_PER_CLASS + 1)]


def coco_eval_episodes(class_ids: Sequence[int], classwise: Mapping[int, Sequence[str]], shot: int, n: int,
                       seed: int = 0) -> list[Episode]:
    """The first ``n`` released COCO-20i val/test episodes for ``seed``: a class uniformly from ``class_ids``,
    a query uniformly from its images, then the supports (the released loader ignores the index)."""
    rng = np.random.RandomState(seed)
    episodes = []
    for _ in range(n):
        cls = int(released_choice(rng, class_ids))
        query = released_choice(rng, classwise[cls])
        episodes.append(Episode(query, _released_supports(rng, classwise[cls], query, shot), cls))
    return episodes


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
