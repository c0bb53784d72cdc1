"""The few-shot episode dataset shared by PASCAL-5i, COCO-20i and FSS-1000 (the released batch dict, our
sampling)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, get_worker_info

from common.constants import FEATURE_STRIDE, IGNORE_LABEL, IMG_SIZE
from data.benchmarks import CLASS_NAMES, EVAL_EPISODES, NFOLDS, fold_classes
from data.cam_files import cam_path
from data.episodes import (EPISODE_RNGS, Episode, Pick, listed_episode, released_pick, released_worker_episodes,
                           train_pick)
from data.errors import DataError
from data.mask_values import NOTES_KEY, OutsideValueReport, encode_notes
from data.readers import ImageTransform, read_cam, read_image, read_label

__all__ = ["FewShotDataset"]


class FewShotDataset(Dataset):
    """Episodes of one fold and split; ``dataset[i]`` is the released batch dict of episode ``i``.

    Subclasses set ``benchmark``, ``nclass``, ``has_ignore``, ``has_folds`` and implement :meth:`_read_split`
    (fills ``img_metadata`` and ``img_metadata_classwise``), :meth:`image_path` and :meth:`mask_path`;
    :meth:`build_class_ids`, :meth:`read_mask`, :meth:`_targets` and :meth:`_episode` may be overridden.

    Args:
        datapath: root holding ``VOC2012/``, ``COCO2014/`` or ``FSS-1000/``.
        fold: 0..3 (0 for a benchmark without folds).
        split: ``"trn"``, ``"val"`` or ``"test"`` (PASCAL/COCO: val and test are the same episodes, as released;
            FSS-1000: two class lists).
        shot: support images per episode.
        img_size: square side the images (and, unless ``use_original_imgsize``, the query mask) are resized to.
        cam_train_path, cam_val_path: CAM roots of training and validation/test images.
        split_root: folder holding the ``pascal/``, ``coco/`` and ``fss/`` split lists (see :mod:`data.splits`).
        use_original_imgsize: keep the query mask at the image's own size (as released).
        nepisodes: validation/test episodes (the first ``nepisodes`` of the released sequence); ``None``: the
            released count (:data:`data.benchmarks.EVAL_EPISODES`: 1000, or every image of the split once).
        seed: validation/test: the released ``fix_randseed`` value (0); training: base seed of the episodes
            (``None`` draws one).
        episode_rng: how training episodes are drawn (:data:`data.episodes.EPISODE_RNGS`): ``"independent"``
            per (seed, epoch, index), or ``"released"``: as the released train.py's DataLoader workers drew them
            (see :meth:`set_epoch`).
        strict_masks: a mask value outside the class range is an error; by default it is read as background,
            as released, and reported to ``mask_report`` (see :mod:`data.mask_values`).
        mask_report: where such files are reported (share one between datasets to warn once per file); a new
            one by default.
    """

    benchmark: str = ""
    nclass: int = 0
    has_ignore: bool = False
    has_folds: bool = True
    train_draws_use_index: bool = True  # False where the released loader ignores the index (COCO-20i)

    def __init__(self, datapath: Path | str, *, fold: int, split: str, shot: int = 1, img_size: int = IMG_SIZE,
                 cam_train_path: Path | str, cam_val_path: Path | str, split_root: Path | str,
                 use_original_imgsize: bool = False, nepisodes: Optional[int] = None,
                 seed: Optional[int] = 0, episode_rng: str = "independent", strict_masks: bool = False,
                 mask_report: Optional[OutsideValueReport] = None) -> None:
        if split not in ("trn", "val", "test"):
            raise ValueError(f"split must be 'trn', 'val' or 'test', got {split!r}")
        if episode_rng not in EPISODE_RNGS:
            raise ValueError(f"episode_rng must be one of {EPISODE_RNGS}, got {episode_rng!r}")
        if not 0 <= fold < (NFOLDS if self.has_folds else 1):
            raise ValueError(f"fold must be in 0..{NFOLDS - 1}, got {fold}" if self.has_folds else
                             f"{self.benchmark} has no folds (fixed class lists): fold must be 0, got {fold}")
        if shot < 1 or img_size < 8 or (nepisodes is not None and nepisodes < 1):
            raise ValueError(f"need shot >= 1, img_size >= 8, nepisodes >= 1; got {shot}, {img_size}, {nepisodes}")
        self.split = "val" if split in ("val", "test") else "trn"  # as released: val and test are evaluation
        self.split_name = split  # as asked (FSS-1000 reads a different class list for val and for test)
        self.fold, self.nfolds, self.shot = fold, NFOLDS, shot
        self.datapath = Path(datapath)
        self.split_root = Path(split_root)
        self.img_size = int(img_size)
        self.cam_size = self.img_size // FEATURE_STRIDE
        self.use_original_imgsize = use_original_imgsize
        self.cam_train_path, self.cam_val_path = Path(cam_train_path), Path(cam_val_path)
        self.transform = ImageTransform(self.img_size)
        if seed is None:
            seed = random.randrange(2**31) if self.split == "trn" else 0
        self.seed = int(seed)
        self.epoch = 0
        self.episode_rng = episode_rng
        self._epoch_episodes: Optional[dict[int, Episode]] = None  # released draws of the current epoch
        self.strict_masks = bool(strict_masks)
        self.mask_report = mask_report if mask_report is not None else OutsideValueReport()
        self._worker_notes: list[tuple[str, list[int]]] = []  # found by this worker in the current episode

        self.class_ids: list[int] = self.build_class_ids()
        self.img_metadata: list[Any] = []
        self.img_metadata_classwise: dict[int, list[str]] = {}
        self._read_split()
        self.nepisodes = int(nepisodes) if nepisodes is not None else self.released_nepisodes()
        self.episodes: Optional[list[Episode]] = (
            self._eval_episodes(self.nepisodes, self.seed) if self.split == "val" else None)

    def build_class_ids(self) -> list[int]:
        """The fold's test classes (val/test) or all the others (trn), as HSNet splits them."""
        val_ids = fold_classes(self.benchmark, self.fold)
        return val_ids if self.split == "val" else [c for c in range(self.nclass) if c not in val_ids]

    def class_names(self) -> dict[int, str]:
        """The name of each of the split's classes: 0-based class id -> the benchmark's class name."""
        names = CLASS_NAMES[self.benchmark]
        return {c: names[c] for c in self.class_ids}

    def released_nepisodes(self) -> int:
        """Validation/test episodes of a released pass: :data:`data.benchmarks.EVAL_EPISODES` of the benchmark,
        or, where that is None (FSS-1000, as HSNet's ``__len__``), one per image of the split."""
        count = EVAL_EPISODES[self.benchmark]
        return len(self.img_metadata) if count is None else count

    # -- to implement ------------------------------------------------------------------------------------

    def _read_split(self) -> None:
        raise NotImplementedError

    def image_path(self, name: str) -> Path:
        raise NotImplementedError

    def mask_path(self, name: str) -> Path:
        raise NotImplementedError

    # -- episodes: by default the index selects the query (PASCAL-5i, FSS-1000); COCO-20i overrides ----------
    def _episode(self, pick: Pick, index: int) -> Episode:
        """Episode ``index`` drawn with ``pick``: query ``img_metadata[index]``, supports of its class."""
        query, cls = self.img_metadata[index]
        return listed_episode(pick, query, cls, self.img_metadata_classwise, self.shot)

    def _eval_episodes(self, n: int, seed: int) -> list[Episode]:
        """The first ``n`` released val/test episodes for ``seed``, drawn from one ``RandomState(seed)``: episode
        ``i`` is :meth:`_episode` ``i % len(img_metadata)``. PASCAL-5i: the fold's val list in file order.
        FSS-1000: the split's images (sorted classes, then sorted file names), supports among
        :func:`data.episodes.fss_support_names` (HSNet's ``np.random.choice(range(1, 11), 1, replace=False)``
        consumes the stream as a choice among 10 names does)."""
        pick = released_pick(np.random.RandomState(seed))
        return [self._episode(pick, i % len(self.img_metadata)) for i in range(n)]

    def _train_episode(self, index: int) -> Episode:
        """Training episode ``index`` of the current epoch, drawn independently of the others."""
        return self._episode(train_pick(self.seed, self.epoch, index), index)

    def _released_train_episode(self, rng: np.random.RandomState, index: int) -> Episode:
        """Training episode ``index`` as the released loader draws it from the NumPy stream ``rng``."""
        return self._episode(released_pick(rng), index)

    # -- episodes ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.img_metadata) if self.split == "trn" else self.nepisodes

    def set_epoch(self, epoch: int, *, order: Optional[Sequence[int]] = None, batch_size: int = 1,
                  nworker: int = 0, stream_seed: Optional[int] = None) -> None:
        """Select the training episodes of ``epoch`` (call before creating the epoch's DataLoader iterator,
        so worker processes get it); no effect on validation/test episodes.

        With ``episode_rng="released"`` the episodes depend on how the loader reads the epoch: ``order`` (the
        sampler's indices of this epoch), ``batch_size``, ``nworker`` and ``stream_seed`` (the NumPy seed the
        released main process set this epoch, which its workers inherited), all required; see
        :func:`data.episodes.released_worker_episodes`. Independent draws ignore them.
        """
        self.epoch = int(epoch)
        if self.split != "trn" or self.episode_rng != "released":
            return
        if order is None or stream_seed is None:
            raise ValueError("released training draws need the epoch's sampler order and stream seed")
        self._epoch_episodes = released_worker_episodes(
            order, batch_size=batch_size, nworker=nworker, seed=stream_seed, draw=self._released_train_episode,
            draws_use_index=self.train_draws_use_index)

    def episode(self, index: int) -> Episode:
        """(query, supports, class) of episode ``index`` (training: of the current epoch)."""
        if not 0 <= index < len(self):
            raise IndexError(f"episode {index} out of range 0..{len(self) - 1}")
        if self.episodes is not None:
            return self.episodes[index]
        if self.episode_rng == "released":
            if self._epoch_episodes is None or index not in self._epoch_episodes:
                raise RuntimeError(f"training episode {index} of epoch {self.epoch} was not drawn: call set_epoch "
                                   "with the epoch's sampler order first (released draws)")
            return self._epoch_episodes[index]
        return self._train_episode(index)

    @property
    def cam_root(self) -> Path:
        """CAM folder of this split's images."""
        return self.cam_val_path if self.split == "val" else self.cam_train_path

    def _check_classwise(self, classes: Iterable[int], source: Sequence[Path]) -> None:
        """Every class an episode can draw needs two distinct images (a query and a different support)."""
        files = ", ".join(str(p) for p in source)
        for cls in classes:
            names = self.img_metadata_classwise.get(cls, [])
            if len(set(names)) < 2:
                raise DataError(f"class {cls} has {len(set(names))} image(s) in {files}; a few-shot episode "
                                "needs at least 2 (a query and a different support)")

    # -- loading -----------------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.load_episode(self.episode(index))

    def read_mask(self, name: str, image_size: tuple[int, int]) -> torch.Tensor:
        """The label mask of image ``name`` (its size ``image_size`` (W, H)) as (H, W) uint8: 0 background,
        1..nclass, 255 boundary where the benchmark has one."""
        return read_label(self.mask_path(name), nclass=self.nclass, image_size=image_size,
                          image_path=self.image_path(name), allow_ignore=self.has_ignore,
                          strict=self.strict_masks, on_outside=self._outside_values)

    def _outside_values(self, path: Path, values: list[int]) -> None:
        """A mask read with values outside the class range: reported here in the main process; in a DataLoader
        worker kept for the episode's batch dict, which carries it to the main process."""
        if get_worker_info() is None:
            self.mask_report.add(str(path), values)
        else:
            self._worker_notes.append((str(path), values))

    def _load(self, name: str) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """-> normalised image (3, S, S), label mask (H, W) uint8, original (W, H)."""
        img = read_image(self.image_path(name))
        return self.transform(img), self.read_mask(name, img.size), img.size

    def _resize_label(self, label: torch.Tensor) -> torch.Tensor:
        """(H, W) uint8 labels -> (S, S) uint8, nearest, as released (``F.interpolate``, not PIL; nearest only
        picks pixels, so resizing the uint8 labels equals the released float resize)."""
        return F.interpolate(label[None, None], size=(self.img_size, self.img_size), mode="nearest")[0, 0]

    def _targets(self, label: torch.Tensor, cls: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """-> (float binary mask of class ``cls``, float 255-boundary map or None without ignore labels)."""
        mask = (label == cls + 1).float()
        return mask, ((label == IGNORE_LABEL).float() if self.has_ignore else None)

    def load_episode(self, episode: Episode) -> dict[str, Any]:
        """The released batch dict of ``episode`` (shapes for S = img_size, h = S // 8, K = shot):

        query_img (3, S, S), query_mask (S, S) ((H, W) with use_original_imgsize), query_name,
        org_query_imsize (W, H), support_imgs (K, 3, S, S), support_masks (K, S, S), support_names [K],
        class_id () int64, query_cam (h, h), support_cams (K, h, h); PASCAL adds query_ignore_idx and
        support_ignore_idxs (1 on 255 boundary pixels) shaped like the masks.
        """
        cls = episode.class_id
        self._worker_notes = []
        query_img, query_label, org_size = self._load(episode.query)
        if not self.use_original_imgsize:
            query_label = self._resize_label(query_label)
        query_mask, query_ignore = self._targets(query_label, cls)

        supports = [self._load(name) for name in episode.supports]
        support_targets = [self._targets(self._resize_label(label), cls) for _, label, _ in supports]

        root = self.cam_root
        query_cam = read_cam(cam_path(root, episode.query, cls), self.cam_size)
        support_cams = torch.stack([read_cam(cam_path(root, name, cls), self.cam_size) for name in episode.supports])

        batch: dict[str, Any] = {
            "query_img": query_img,
            "query_mask": query_mask,
            "query_name": episode.query,
            "org_query_imsize": org_size,
            "support_imgs": torch.stack([img for img, _, _ in supports]),
            "support_masks": torch.stack([mask for mask, _ in support_targets]),
            "support_names": list(episode.supports),
            "class_id": torch.tensor(cls),
            "query_cam": query_cam,
            "support_cams": support_cams,
        }
        if self.has_ignore:
            batch["query_ignore_idx"] = query_ignore
            batch["support_ignore_idxs"] = torch.stack([ignore for _, ignore in support_targets])
        if get_worker_info() is not None:  # taken out again by data.dataset.EpisodeLoader in the main process
            batch[NOTES_KEY] = encode_notes(self._worker_notes)
        return batch

    # -- CAM check ---------------------------------------------------------------------------------------
    def needed_cam_pairs(self) -> list[tuple[str, int]]:
        """Every (image name, class) whose CAM an episode of this dataset may load."""
        if self.episodes is not None:
            pairs = {(n, ep.class_id) for ep in self.episodes for n in (ep.query, *ep.supports)}
        else:
            pairs = {(n, c) for c in self.class_ids for n in self.img_metadata_classwise.get(c, [])}
        return sorted(pairs)
