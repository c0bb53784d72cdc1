"""PASCAL-5i episodes (HSNet's layout: ``VOC2012/JPEGImages``, ``VOC2012/SegmentationClassAug``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from data.benchmarks import NCLASS, NFOLDS, CamPairSpec
from data.fewshot import FewShotDataset
from data.splits import read_pascal_split

__all__ = ["DatasetPASCAL", "cam_pairs"]


class DatasetPASCAL(FewShotDataset):
    """PASCAL-5i: fold f holds classes 5f..5f+4; training reads the other folds' ``trn`` lists (queries in
    list order, one episode per listed (image, class) pair), validation/test the fold's ``val`` list.
    Masks keep VOC's 255 boundary as ``*_ignore_idx`` maps. See :class:`data.fewshot.FewShotDataset`."""

    benchmark = "pascal"
    nclass = NCLASS["pascal"]
    has_ignore = True

    def _read_split(self) -> None:
        folds = [self.fold] if self.split == "val" else [f for f in range(self.nfolds) if f != self.fold]
        files = [self.split_root / "pascal" / self.split / f"fold{f}.txt" for f in folds]
        metadata = [pair for f in folds for pair in read_pascal_split(self.split_root, self.split, f)]
        classwise: dict[int, list[str]] = {c: [] for c in range(self.nclass)}
        for name, cls in metadata:  # list order matters: the released sampler indexes these lists
            classwise[cls].append(name)
        self.img_metadata, self.img_metadata_classwise = metadata, classwise
        self._check_classwise(sorted({c for _, c in metadata}), files)

    def image_path(self, name: str) -> Path:
        return self.datapath / "VOC2012" / "JPEGImages" / f"{name}.jpg"

    def mask_path(self, name: str) -> Path:
        return self.datapath / "VOC2012" / "SegmentationClassAug" / f"{name}.png"


def cam_pairs(image_root: Path, split_root: Path, splits: Optional[Sequence[str]] = None) -> list[CamPairSpec]:
    """The CAM job's pairs: every line of the ``trn`` lists into the training folder, of the ``val`` lists into
    the validation folder, in list order (the released script computes a training pair once per fold reading it;
    the job keeps each once)."""
    return [CamPairSpec(folder, f"{name}.jpg", cls, name, cls, split)
            for folder, split in enumerate(("trn", "val")) if splits is None or split in splits
            for fold in range(NFOLDS) for name, cls in read_pascal_split(split_root, split, fold)]
