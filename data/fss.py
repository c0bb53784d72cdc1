"""FSS-1000 episodes, HSNet's protocol: ``FSS-1000/<class>/<n>.jpg`` images with ``<n>.png`` masks, fixed
trn/val/test class lists (``fss/{trn,val,test}.txt``, :func:`data.splits.read_fss_split`), no folds.

* Classes: each split's list sorted in code-point order (Python's ``sorted``, as HSNet); class id = index in
  that sorted list + the split's offset (trn 0.., val 520.., test 760..; :data:`data.benchmarks.FSS_CLASS_OFFSET`).
* Images: per class, the folder's ``<n>.jpg`` files in string order (``1, 10, 2, ..., 9``), the query order of
  HSNet's evaluation pass; every image is the query once (2400 val or test episodes on the real data).
* Supports: drawn from the file names ``1..10`` of the query's class (never the query; repeats allowed).
* Masks: grey level >= 128 is the object (:func:`data.readers.read_binary_mask`); no ignore label.

Image names (``Episode.query``, CAM files) are ``<class>/<n>``, so the CAM of image ``abacus/3`` for class id
``c`` is ``CAM_FSS/abacus/3--c.pt`` (:func:`data.cam_files.cam_path`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from data.benchmarks import BENCHMARK_SPECS, FSS_CLASS_OFFSET, FSS_DIR, NCLASS, CamPairSpec
from data.episodes import fss_support_names
from data.errors import DataError, SplitError
from data.fewshot import FewShotDataset
from data.readers import read_binary_mask
from data.splits import FSS_SPLITS, read_fss_split

__all__ = ["DatasetFSS", "cam_pairs", "fss_classes", "fss_image_names", "fss_prompts", "fss_vocabulary",
           "prior_class_names", "prompt_name"]


def prompt_name(category: str) -> str:
    """The class name in the CAM prompt: the folder name with underscores as spaces (``ab_wheel`` -> ``ab wheel``)."""
    return category.replace("_", " ")


def fss_classes(split_root: Union[str, Path], split: str) -> list[tuple[str, int]]:
    """(class folder name, class id) of the ``split`` list, in class-id order (the sorted list, as HSNet)."""
    offset = FSS_CLASS_OFFSET[split]
    return [(name, offset + i) for i, name in enumerate(sorted(read_fss_split(split_root, split)))]


def fss_vocabulary(split_root: Union[str, Path]) -> list[tuple[str, int]]:
    """(class folder name, class id) of all three lists, trn then val then test: the classes of the CAM prompts.

    Raises:
        SplitError: a class is listed in two splits.
    """
    classes: list[tuple[str, int]] = []
    seen: dict[str, str] = {}
    for split in FSS_SPLITS:
        for name, cls in fss_classes(split_root, split):
            if name in seen:
                raise SplitError(f"FSS-1000 class {name!r} is listed in both {seen[name]}.txt and {split}.txt "
                                 f"under {Path(split_root) / 'fss'}")
            seen[name] = split
            classes.append((name, cls))
    return classes


def fss_prompts(split_root: Union[str, Path]) -> list[str]:
    """The FSS-1000 class names of the prompts, in class-id order, underscores as spaces."""
    return [prompt_name(category) for category, _ in fss_vocabulary(split_root)]


def prior_class_names(benchmark: str, split_root: Union[str, Path]) -> Sequence[str]:
    """The class names a benchmark's priors are made for, in prompt order (what a CAM manifest's
    ``class_names_sha256`` hashes): PASCAL's 20, COCO's 80, FSS-1000's listed classes (:func:`fss_prompts`)."""
    return BENCHMARK_SPECS[benchmark].prompt_names(split_root)


def fss_image_names(fss_root: Union[str, Path], category: str) -> list[str]:
    """The images of class folder ``fss_root/category`` as names ``<category>/<n>``, in HSNet's order: the
    folder's ``<n>.jpg`` files in string order (``1, 10, 2, ..., 9``).

    Raises:
        DataError: the folder is missing, or lacks one of the support images ``1.jpg .. 10.jpg`` that HSNet's
            sampler draws by name.
    """
    folder = Path(fss_root) / category
    try:
        entries = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise DataError(f"FSS-1000 class folder {folder} not found (prepare the data with "
                        "`python -m data.prepare fss`, see the README)") from exc
    files = sorted(entry for entry in entries if len(entry.split(".")) == 2 and entry.split(".")[1] == "jpg")
    names = [f"{category}/{file.split('.')[0]}" for file in files]
    present = set(names)
    missing = [name for name in fss_support_names(category) if name not in present]
    if missing:
        raise DataError(f"FSS-1000 class folder {folder} lacks {', '.join(Path(m).name + '.jpg' for m in missing)}; "
                        "HSNet's sampler draws the supports among 1.jpg .. 10.jpg")
    return names


class DatasetFSS(FewShotDataset):
    """FSS-1000 (see the module docstring): ``split`` trn, val or test reads that class list; ``fold`` must be 0.
    Training queries every image once per epoch in random order with random supports; validation/test is HSNet's
    seed-0 pass. See :class:`data.fewshot.FewShotDataset`."""

    benchmark = "fss"
    nclass = NCLASS["fss"]
    has_ignore = False
    has_folds = False

    def build_class_ids(self) -> list[int]:
        """The ids of the split's classes (reads the list; ``self.categories`` are its sorted names)."""
        classes = fss_classes(self.split_root, self.split_name)
        self.categories = [name for name, _ in classes]
        return [cls for _, cls in classes]

    def class_names(self) -> dict[int, str]:
        """The name of each of the split's classes: class id -> its folder name (e.g. ``ab_wheel``)."""
        return dict(zip(self.class_ids, self.categories))

    def _read_split(self) -> None:
        root = self.datapath / FSS_DIR
        metadata: list[tuple[str, int]] = []
        classwise: dict[int, list[str]] = {}
        for category, cls in zip(self.categories, self.class_ids):
            metadata += [(name, cls) for name in fss_image_names(root, category)]
            classwise[cls] = fss_support_names(category)
        self.img_metadata, self.img_metadata_classwise = metadata, classwise

    def image_path(self, name: str) -> Path:
        return self.datapath / FSS_DIR / f"{name}.jpg"

    def mask_path(self, name: str) -> Path:
        return self.datapath / FSS_DIR / f"{name}.png"

    def read_mask(self, name: str, image_size: tuple[int, int]) -> torch.Tensor:
        """0/1 object mask (grey level >= 128, as HSNet)."""
        return read_binary_mask(self.mask_path(name), image_size=image_size, image_path=self.image_path(name))

    def _targets(self, label: torch.Tensor, cls: int) -> tuple[torch.Tensor, None]:
        return label.float(), None  # the mask is the class's already; no ignore map

    def needed_cam_pairs(self) -> list[tuple[str, int]]:
        """Training: every image of the split (a query) and the support names 1..10 of its class."""
        pairs = set(super().needed_cam_pairs())
        if self.episodes is None:
            pairs |= set(self.img_metadata)
        return sorted(pairs)


def cam_pairs(image_root: Path, split_root: Path, splits: Optional[Sequence[str]] = None) -> list[CamPairSpec]:
    """The CAM job's pairs: every ``<class>/<n>.jpg`` of the trn, val and test classes, for its own class, into
    ``<cam folder>/<class>/<n>--<class id>.pt``; the prompt is the class's position in :func:`fss_prompts`."""
    split_of = {cls: split for split in FSS_SPLITS for _, cls in fss_classes(split_root, split)}
    return [CamPairSpec(0, f"{name}.jpg", position, name, cls, split_of[cls])
            for position, (category, cls) in enumerate(fss_vocabulary(split_root))
            if splits is None or split_of[cls] in splits for name in fss_image_names(image_root, category)]
