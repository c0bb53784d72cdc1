"""Per-episode records of test passes, kept beside ``results.json`` as ``episodes.npz``.

For every episode of every (seed, fold, shot) cell of a test run: its index in the released episode sequence,
its class (0-based id, as the data's class lists number them), the query and support image names, and the
background/foreground pixel counts of intersection and union it added to the class sums. mIoU and FB-IoU
recomputed from them (:meth:`EpisodeRecords.metrics`) are the numbers test.py printed, bit for bit: the counts
are integers and :func:`common.evaluation.iou_from_sums` is the formula both use.

``episodes.npz`` (NumPy, no pickles) holds one row per episode, the cells one after the other; every column is
1-D except ``supports``::

    seed, fold, shot, episode, class_id          int64   (N,)
    query                                        str     (N,)
    supports                                     str     (N, K_max), "" after a cell's K names
    inter_bg, inter_fg, union_bg, union_fg       int64   (N,)   pixel counts

``pandas.DataFrame({k: v for k, v in np.load(path).items() if v.ndim == 1})`` reads it as a table. The
fold's class list (what mIoU averages over, classes without an episode included) is in ``results.json``'s
``runs[i].class_ids``; :func:`read_run` joins the two.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence

import numpy as np
import torch

from common.distributed import all_gather_objects
from common.errors import UserInputError
from common.evaluation import iou_from_sums
from common.io import atomic_write_bytes

EPISODES_NAME = "episodes.npz"
COUNT_COLUMNS = ("inter_bg", "inter_fg", "union_bg", "union_fg")
COLUMNS = ("seed", "fold", "shot", "episode", "class_id", "query", "supports", *COUNT_COLUMNS)


class RecordsError(UserInputError, ValueError):
    """A results.json / episodes.npz pair that cannot be read or does not fit together."""


class Cell(NamedTuple):
    """One test pass of a sweep: episode seed, fold and shot."""

    seed: int
    fold: int
    shot: int

    def label(self) -> str:
        """``seed 0, fold 1, 5-shot``."""
        return f"seed {self.seed}, fold {self.fold}, {self.shot}-shot"


@dataclass(frozen=True)
class EpisodeRecords:
    """The episodes of one cell, row ``i`` being episode ``i`` of the released sequence.

    Attributes:
        cell: which (seed, fold, shot).
        class_ids: the fold's classes, which mIoU and FB-IoU average over.
        class_id: (N,) int64 class of each episode (0-based).
        query: (N,) str query image names.
        supports: (N, K) str support image names.
        intersection, union: (N, 2) int64 pixel counts, column 0 background, column 1 foreground.
    """

    cell: Cell
    class_ids: tuple[int, ...]
    class_id: np.ndarray
    query: np.ndarray
    supports: np.ndarray
    intersection: np.ndarray
    union: np.ndarray

    def __len__(self) -> int:
        return len(self.class_id)

    def metrics(self) -> tuple[float, float]:
        """``(mIoU, FB-IoU)`` in percent, recomputed from the (2, nclass) float64 per-class sums of intersection
        and union: equal to what the test pass printed."""
        nclass = max([*self.class_ids, *self.class_id.tolist()]) + 1
        index = torch.as_tensor(self.class_id, dtype=torch.long)
        zeros = torch.zeros(2, nclass, dtype=torch.float64)
        inter, union = (zeros.index_add(1, index, torch.as_tensor(counts, dtype=torch.float64).t())
                        for counts in (self.intersection, self.union))
        return iou_from_sums(inter, union, torch.as_tensor(self.class_ids, dtype=torch.long))

    def first_difference(self, other: "EpisodeRecords") -> Optional[str]:
        """Where ``other`` has other episodes (count, classes, queries or supports); ``None`` when the same."""
        if self.class_ids != other.class_ids:
            return f"fold classes {list(self.class_ids)} vs {list(other.class_ids)}"
        return first_difference(self.episodes(), other.episodes())

    def episodes(self) -> list[tuple[int, str, tuple[str, ...]]]:
        """``(class_id, query, supports)`` of every episode."""
        return [(int(cls), str(query), tuple(str(name) for name in supports if name))
                for cls, query, supports in zip(self.class_id, self.query, self.supports)]


def first_difference(mine: Sequence[tuple[int, str, tuple[str, ...]]],
                     theirs: Sequence[tuple[int, str, tuple[str, ...]]], words: tuple[str, str] = ("vs", "")
                     ) -> Optional[str]:
    """The first difference of two episode lists of ``(class_id, query, supports)``, in words; ``None`` when
    equal. ``words``: what joins the two sides and ends the sentence (``("then;", "now")``)."""
    tail = f" {words[1]}" if words[1] else ""
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            return f"episode {i}: {_describe(a)} {words[0]} {_describe(b)}{tail}"
    if len(mine) != len(theirs):
        return f"{len(mine)} episodes {words[0]} {len(theirs)}{tail}"
    return None


def _describe(episode: tuple[int, str, tuple[str, ...]]) -> str:
    cls, query, supports = episode
    return f"class {cls}, query {query}, supports {' '.join(supports)}"


class EpisodeCollector:
    """Collects this rank's per-episode counts during a test pass; the ``score_hook`` of
    :func:`engine.loops.test_pass`, called with ``(batch, area_inter, area_union)`` per batch."""

    def __init__(self) -> None:
        self._counts: list[np.ndarray] = []
        self._class_id: list[np.ndarray] = []
        self._query: list[str] = []

    def __call__(self, batch: Mapping[str, Any], area_inter: torch.Tensor, area_union: torch.Tensor) -> None:
        """Add a batch: ``area_*`` (2, B) float pixel counts from ``classify_prediction``."""
        counts = torch.cat([area_inter, area_union]).t()  # (B, 4): inter bg, inter fg, union bg, union fg
        self._counts.append(counts.round().to(torch.int64).cpu().numpy())
        self._class_id.append(batch["class_id"].view(-1).cpu().numpy().astype(np.int64))
        self._query.extend(str(name) for name in batch["query_name"])

    def records(self, cell: Cell, dataset: Any, indices: Sequence[int]) -> EpisodeRecords:
        """Every rank's episodes joined into one :class:`EpisodeRecords` (a collective under torchrun).

        ``indices``: this rank's episode indices in the order they were scored (its sampler's order);
        ``dataset``: the cell's dataset, whose ``episode(i)`` gives names and class of episode ``i``.
        """
        mine = (list(indices), np.concatenate(self._counts) if self._counts else np.zeros((0, 4), np.int64),
                np.concatenate(self._class_id) if self._class_id else np.zeros(0, np.int64), list(self._query))
        total = len(dataset)
        counts = np.full((total, 4), -1, dtype=np.int64)
        class_id = np.full(total, -1, dtype=np.int64)
        for rank_indices, rank_counts, rank_classes, rank_queries in all_gather_objects(mine):
            if not len(rank_indices) == len(rank_counts) == len(rank_classes) == len(rank_queries):
                raise RuntimeError(f"{cell.label()}: {len(rank_counts)} episodes scored for {len(rank_indices)} drawn")
            for position, index in enumerate(rank_indices):
                episode = dataset.episode(index)
                if episode.query != rank_queries[position] or episode.class_id != rank_classes[position]:
                    raise RuntimeError(f"{cell.label()}: episode {index} was scored as {rank_queries[position]}, "
                                       f"but the dataset draws {episode.query}")
                counts[index] = rank_counts[position]
                class_id[index] = rank_classes[position]
        if (class_id < 0).any():
            raise RuntimeError(f"{cell.label()}: episodes {np.flatnonzero(class_id < 0)[:5].tolist()} were not scored")
        episodes = [dataset.episode(i) for i in range(total)]
        return EpisodeRecords(
            cell=cell, class_ids=tuple(int(c) for c in dataset.class_ids), class_id=class_id,
            query=np.array([e.query for e in episodes], dtype=str),
            supports=np.array([list(e.supports) for e in episodes], dtype=str).reshape(total, -1),
            intersection=counts[:, :2].copy(), union=counts[:, 2:].copy())


def episodes_npz(records: Iterable[EpisodeRecords]) -> bytes:
    """The ``episodes.npz`` bytes of ``records`` (cells in the given order)."""
    records = list(records)
    width = max([r.supports.shape[1] for r in records] + [1])
    columns: dict[str, list[np.ndarray]] = {key: [] for key in COLUMNS}
    for r in records:
        n = len(r)
        for key, value in zip(("seed", "fold", "shot"), r.cell):
            columns[key].append(np.full(n, value, dtype=np.int64))
        columns["episode"].append(np.arange(n, dtype=np.int64))
        columns["class_id"].append(r.class_id.astype(np.int64))
        columns["query"].append(r.query.astype(str))
        padded = np.full((n, width), "", dtype=object)
        padded[:, :r.supports.shape[1]] = r.supports
        columns["supports"].append(padded.astype(str))
        for key, value in zip(COUNT_COLUMNS, (*r.intersection.T, *r.union.T)):
            columns[key].append(value.astype(np.int64))
    arrays = {key: (np.concatenate(parts) if parts else np.zeros(0, np.int64)) for key, parts in columns.items()}
    if not records:
        arrays["query"] = np.zeros(0, dtype=str)
        arrays["supports"] = np.zeros((0, 1), dtype=str)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write_episodes(path: Path, records: Iterable[EpisodeRecords]) -> Path:
    """Write ``episodes.npz`` atomically; returns ``path``."""
    return atomic_write_bytes(episodes_npz(records), path)


def read_episodes(path: Path, class_ids: Mapping[Cell, Sequence[int]]) -> dict[Cell, EpisodeRecords]:
    """The cells of ``path`` that ``class_ids`` names (each with its fold's classes), as :class:`EpisodeRecords`.

    Raises:
        RecordsError: the file cannot be read, or lacks a named cell.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            columns = {key: data[key] for key in data.files}
    except (OSError, ValueError, KeyError) as exc:
        raise RecordsError(f"cannot read {path} ({type(exc).__name__}: {exc})") from exc
    missing = [key for key in COLUMNS if key not in columns]
    if missing:
        raise RecordsError(f"{path} is not an episodes file of test.py (no {', '.join(missing)})")
    out = {}
    for cell, classes in class_ids.items():
        rows = np.flatnonzero((columns["seed"] == cell.seed) & (columns["fold"] == cell.fold)
                              & (columns["shot"] == cell.shot))
        if len(rows) == 0:
            raise RecordsError(f"{path} holds no episodes of {cell.label()}")
        rows = rows[np.argsort(columns["episode"][rows], kind="stable")]
        if not np.array_equal(columns["episode"][rows], np.arange(len(rows))):
            raise RecordsError(f"{path}: the episodes of {cell.label()} are not 0..{len(rows) - 1} once each")
        counts = np.stack([columns[key][rows] for key in COUNT_COLUMNS], axis=1).astype(np.int64)
        out[cell] = EpisodeRecords(cell=cell, class_ids=tuple(int(c) for c in classes),
                                   class_id=columns["class_id"][rows].astype(np.int64), query=columns["query"][rows],
                                   supports=columns["supports"][rows][:, :cell.shot],
                                   intersection=counts[:, :2], union=counts[:, 2:])
    return out


def results_path(path: Path) -> Path:
    """``results.json`` of a run folder, or ``path`` itself when it names a file."""
    return path / "results.json" if path.is_dir() else path


def run_cells(document: Mapping[str, Any]) -> dict[Cell, Mapping[str, Any]]:
    """``{cell: run entry}`` of a ``results.json`` document (runs before seeds existed count as seed ``seed``)."""
    default_seed = document.get("seed", 0)
    return {Cell(int(run.get("seed", default_seed)), int(run["fold"]), int(run["nshot"])): run
            for run in document.get("runs", [])}


def read_run(path: Path) -> tuple[dict[str, Any], dict[Cell, EpisodeRecords]]:
    """A test run's ``results.json`` (``path``: the file or its run folder) and its cells' episode records.

    Raises:
        RecordsError: no readable ``results.json``, or no per-episode records beside it (runs made before
            test.py kept them), or records that do not fit it.
    """
    results = results_path(Path(path))
    try:
        document = json.loads(results.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RecordsError(f"{results}: not found (expected a test.py run folder or its results.json)") from exc
    except (OSError, ValueError) as exc:
        raise RecordsError(f"cannot read {results} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(document, dict) or "runs" not in document:
        raise RecordsError(f"{results} is not a results.json of test.py (no 'runs')")
    name = document.get("episodes_file")
    if not name:
        raise RecordsError(f"{results} has no per-episode records (made by a test.py before they were kept); "
                           "run test.py again to get them")
    cells = run_cells(document)
    missing = [cell.label() for cell, run in cells.items() if "class_ids" not in run]
    if missing:
        raise RecordsError(f"{results}: runs without class_ids ({missing[0]})")
    records = read_episodes(results.parent / name, {cell: run["class_ids"] for cell, run in cells.items()})
    return document, records
