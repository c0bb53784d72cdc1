"""Building the few-shot datasets and loaders (whether their CAM priors exist: :mod:`priors.provenance`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Sampler

from common.constants import IMG_SIZE
from common.workers import check_worker_tempdir
from data.benchmarks import BENCHMARK_SPECS, DEFAULT_CAM_DIRS
from data.errors import MissingCAMError
from data.fewshot import FewShotDataset
from data.mask_values import NOTES_KEY, OutsideValueReport
from data.splits import resolve_split_root

__all__ = ["EpisodeLoader", "MissingCAMError", "OutsideValueReport", "build_dataloader", "build_dataset"]


def build_dataset(benchmark: str, *, datapath: str | Path, fold: int, split: str, shot: int = 1,
                  img_size: int = IMG_SIZE, cam_train_path: Optional[str | Path] = None,
                  cam_val_path: Optional[str | Path] = None, splitpath: Optional[str | Path] = None,
                  use_original_imgsize: bool = False, nepisodes: Optional[int] = None, seed: Optional[int] = 0,
                  episode_rng: str = "independent", strict_masks: bool = False,
                  mask_report: Optional[OutsideValueReport] = None) -> FewShotDataset:
    """The episodes of ``benchmark`` (one of :data:`data.benchmarks.BENCHMARKS`), ``fold`` (0 for FSS-1000,
    which has none) and ``split`` ("trn", "val", "test").

    CAM roots default to :data:`data.benchmarks.DEFAULT_CAM_DIRS` under ``datapath`` (``CAM_Train`` and
    ``CAM_Val`` for PASCAL, ``CAM_COCO``, ``CAM_FSS``); ``splitpath=None`` uses the verified HSNet split cache
    (:func:`data.splits.resolve_split_root`). Validation/test episodes are the released ones for ``seed``
    (0 as released), the first ``nepisodes`` (``None``: the released count, 1000 or every FSS-1000 image once);
    training episodes are drawn per ``(seed, epoch, index)``, or with ``episode_rng="released"`` as the
    released train.py's DataLoader workers drew them, see :meth:`FewShotDataset.set_epoch`. Mask values outside
    the class range are read as background and reported to ``mask_report`` (``strict_masks``: an error), see
    :mod:`data.mask_values`.
    """
    if benchmark not in BENCHMARK_SPECS:
        raise ValueError(f"benchmark must be one of {sorted(BENCHMARK_SPECS)}, got {benchmark!r}")
    datapath = Path(datapath)
    train_dir, val_dir = DEFAULT_CAM_DIRS[benchmark]
    return BENCHMARK_SPECS[benchmark].dataset_class()(
        datapath, fold=fold, split=split, shot=shot, img_size=img_size,
        cam_train_path=Path(cam_train_path) if cam_train_path else datapath / train_dir,
        cam_val_path=Path(cam_val_path) if cam_val_path else datapath / val_dir,
        split_root=resolve_split_root(splitpath), use_original_imgsize=use_original_imgsize,
        nepisodes=nepisodes, seed=seed, episode_rng=episode_rng, strict_masks=strict_masks, mask_report=mask_report)


class EpisodeLoader(DataLoader):
    """A DataLoader of episode batches that passes what its worker processes found in mask files (values
    outside the class range, read as background) to the dataset's :class:`OutsideValueReport` in this process,
    and removes that note from the batch (see :mod:`data.mask_values`)."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        report = getattr(self.dataset, "mask_report", None)
        for batch in super().__iter__():
            if isinstance(batch, dict) and NOTES_KEY in batch:
                notes = batch.pop(NOTES_KEY)
                if report is not None:
                    report.add_encoded(notes)
            yield batch


def build_dataloader(dataset: FewShotDataset, *, bsz: int, nworker: int, shuffle: bool, seed: Optional[int] = 0,
                     sampler: Optional[Sampler[int]] = None) -> DataLoader:
    """A DataLoader (:class:`EpisodeLoader`) over ``dataset``; the episodes do not depend on ``bsz``,
    ``nworker`` or the global RNGs (unless ``dataset`` draws its training episodes as released).

    ``shuffle`` (ignored with a ``sampler``) permutes episode order with a generator seeded by ``seed``.

    Raises:
        common.workers.WorkerTempDirError: workers (``nworker`` > 0) could not pass batches back from ``$TMPDIR``.
    """
    check_worker_tempdir(nworker)
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    return EpisodeLoader(dataset, batch_size=bsz, shuffle=shuffle if sampler is None else False, sampler=sampler,
                         num_workers=nworker, generator=generator, persistent_workers=False)
