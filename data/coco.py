"""COCO-20i episodes (HSNet's layout: ``COCO2014/{train2014,val2014}``, ``COCO2014/annotations/{split}/*.png``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from data.benchmarks import NCLASS, NFOLDS, CamPairSpec
from data.episodes import Episode, Pick, coco_episode
from data.fewshot import FewShotDataset
from data.splits import read_coco_split

__all__ = ["DatasetCOCO", "cam_pairs"]


class DatasetCOCO(FewShotDataset):
    """COCO-20i: fold f holds classes f, f+4, ..., f+76; ``{trn,val}/fold{f}.pkl`` map each class to its
    images (``train2014/NAME.jpg`` / ``val2014/NAME.jpg``). Every episode draws a class, then a query and
    supports of it (the index only selects the draw, as released). No ignore map. See
    :class:`data.fewshot.FewShotDataset`."""

    benchmark = "coco"
    nclass = NCLASS["coco"]
    has_ignore = False
    train_draws_use_index = False

    def _read_split(self) -> None:
        classwise = read_coco_split(self.split_root, self.split, self.fold)
        self.img_metadata_classwise = {c: classwise.get(c, []) for c in range(self.nclass)}
        self.img_metadata = sorted({n for names in classwise.values() for n in names})
        self._check_classwise(self.class_ids, [self.split_root / "coco" / self.split / f"fold{self.fold}.pkl"])

    def image_path(self, name: str) -> Path:
        return self.datapath / "COCO2014" / name

    def mask_path(self, name: str) -> Path:
        return (self.datapath / "COCO2014" / "annotations" / name).with_suffix(".png")

    def _episode(self, pick: Pick, index: int) -> Episode:
        return coco_episode(pick, self.class_ids, self.img_metadata_classwise, self.shot)


def cam_pairs(image_root: Path, split_root: Path, splits: Optional[Sequence[str]] = None) -> list[CamPairSpec]:
    """The CAM job's pairs: every image of every class of the ``trn`` and ``val`` pickles, into the one CAM
    folder (image names keep their ``train2014/`` / ``val2014/`` subfolder)."""
    pairs = []
    for split in splits or ("trn", "val"):
        for fold in range(NFOLDS):
            classwise = read_coco_split(split_root, split, fold)
            pairs += [CamPairSpec(0, name, int(cls), name, int(cls), split) for cls in sorted(classwise)
                      for name in classwise[cls]]
    return pairs
