"""How good a folder of priors is: IoU with the ground truth, per class, at the best single threshold and at 0.5.

As CLIP-ES's ``eval_cam.py`` reports CAM quality (a sweep of one threshold shared by all classes, the one with
the best mean kept; per-class IoU from intersections and unions summed over the whole split, the mean over the
classes that occur), with two differences that follow from what IMR-HSNet reads:

* each (image, class) prior is scored as a binary mask of its class (pixels of other classes are background);
  ``eval_cam.py`` scores one multi-class map per image (the argmax over the image's CAMs and the threshold);
* by default at the prior's own resolution (``resolution="prior"``: the ground truth resized to the prior's
  (s, s) by nearest neighbour, as the datasets resize masks): what the model gets, independent of how the
  prior is upsampled. ``resolution="image"`` upsamples the prior (bilinearly) to the mask instead.

Pixels labelled 255 (VOC's object boundaries) are ignored. Beside the priors, the report gives the IoU of the
trivial prior that covers the whole image (its IoU is the share of the image the class covers): a prior near
that number carries no location.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from common.constants import CAM_SIZE, IGNORE_LABEL
from common.resize import resize_bilinear
from data.benchmarks import CLASS_NAMES, TITLES
from data.cam_files import cam_path
from data.errors import MissingCAMError
from data.fewshot import FewShotDataset
from data.prior_files import resize_nearest
from data.readers import read_cam

__all__ = ["RESOLUTIONS", "THRESHOLDS", "PriorQuality", "class_names_of", "evaluate_priors", "prior_pairs",
           "report_title"]

THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
FIXED_THRESHOLD = 0.5
RESOLUTIONS = ("prior", "image")


def prior_pairs(dataset: FewShotDataset) -> list[tuple[str, int]]:
    """Every (image name, class) of the dataset's split and fold: the pairs its episodes draw from."""
    pairs = {(name, cls) for cls in dataset.class_ids for name in dataset.img_metadata_classwise.get(cls, [])}
    pairs |= {item for item in dataset.img_metadata if isinstance(item, tuple)}  # PASCAL, FSS-1000: listed pairs
    return sorted(pairs)


def class_names_of(dataset: FewShotDataset) -> dict[int, str]:
    """Class id -> name for the dataset's classes (FSS-1000: the folder names)."""
    if dataset.benchmark in CLASS_NAMES:
        return {cls: CLASS_NAMES[dataset.benchmark][cls] for cls in dataset.class_ids}
    return dict(zip(dataset.class_ids, getattr(dataset, "categories", [str(c) for c in dataset.class_ids])))


@dataclass
class PriorQuality:
    """Summed intersections and unions per class and threshold (``THRESHOLDS``), and what the report needs."""

    classes: dict[int, str]
    intersection: dict[int, np.ndarray] = field(default_factory=dict)   # (T,) per class
    union: dict[int, np.ndarray] = field(default_factory=dict)
    pairs: dict[int, int] = field(default_factory=dict)
    full_image: dict[int, list[int]] = field(default_factory=dict)      # [gt pixels, valid pixels] per class
    background: np.ndarray = field(default_factory=lambda: np.zeros((2, len(THRESHOLDS)), np.int64))

    def add(self, cls: int, prior: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None:
        """Score one prior (h, w) in [0, 1] against its binary ``target`` (h, w), where ``valid``."""
        # numpy: small boolean arrays, where torch's threads only add overhead
        valid = valid.numpy().astype(bool)
        gt = target.numpy().astype(bool) & valid
        pred = prior.numpy()[None] >= np.asarray(THRESHOLDS, np.float32)[:, None, None]   # (T, h, w)
        self.intersection[cls] = self.intersection.get(cls, 0) + (pred & gt).sum(axis=(1, 2))
        self.union[cls] = self.union.get(cls, 0) + ((pred | gt) & valid).sum(axis=(1, 2))
        self.pairs[cls] = self.pairs.get(cls, 0) + 1
        counts = self.full_image.setdefault(cls, [0, 0])
        counts[0] += int(gt.sum())
        counts[1] += int(valid.sum())
        back_pred, back_gt = ~pred, ~gt & valid
        self.background[0] += (back_pred & back_gt).sum(axis=(1, 2))
        self.background[1] += ((back_pred | back_gt) & valid).sum(axis=(1, 2))

    def class_iou(self) -> dict[int, np.ndarray]:
        """Per class, IoU (%) per threshold (NaN where neither the prior nor the truth has a pixel)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return {c: 100.0 * self.intersection[c] / self.union[c] for c in self.intersection}

    def summary(self) -> dict[str, Any]:
        """The report: best threshold, per-class and mean IoU there and at 0.5, the whole-image baseline."""
        per_class = self.class_iou()
        classes = sorted(per_class)
        table = np.array([per_class[c] for c in classes]) if classes else np.zeros((0, len(THRESHOLDS)))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.array([np.nanmean(col) if np.isfinite(col).any() else np.nan for col in table.T])
            background = 100.0 * self.background[0] / self.background[1]
        fixed = THRESHOLDS.index(FIXED_THRESHOLD)
        best = int(np.nanargmax(mean)) if np.isfinite(mean).any() else fixed
        full = {c: 100.0 * g / v if v else float("nan") for c, (g, v) in self.full_image.items()}

        def number(x: float) -> Optional[float]:
            return None if not np.isfinite(x) else round(float(x), 4)

        return {
            "thresholds": list(THRESHOLDS),
            "best_threshold": THRESHOLDS[best],
            "miou_best": number(mean[best]),
            "miou_at_0.5": number(mean[fixed]),
            "background_iou_best": number(background[best]),
            "miou_full_image": number(np.nanmean([full[c] for c in classes])) if classes else None,
            "miou_per_threshold": [number(x) for x in mean],
            "classes": [{"class_id": c, "name": self.classes.get(c, str(c)), "pairs": self.pairs[c],
                         "iou_best": number(per_class[c][best]), "iou_at_0.5": number(per_class[c][fixed]),
                         "iou_full_image": number(full[c])} for c in classes],
        }


def _check_present(dataset: FewShotDataset, root: Path, pairs: Sequence[tuple[str, int]]) -> None:
    missing = [cam_path(root, name, cls) for name, cls in pairs if not cam_path(root, name, cls).is_file()]
    if missing:
        first = ", ".join(str(p) for p in missing[:3])
        raise MissingCAMError(f"{len(missing)} of {len(pairs)} priors of {dataset.benchmark} {dataset.split_name} "
                              f"fold {dataset.fold} are missing under {root} (first: {first}); generate or import "
                              "them, or check --priors")


def _target(dataset: FewShotDataset, name: str, cls: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(binary mask of ``cls``, valid-pixel map) of image ``name``, both (H, W) bool, at the mask's size."""
    with Image.open(dataset.image_path(name)) as img:
        size = img.size
    label = dataset.read_mask(name, size)
    if dataset.benchmark == "fss":
        return label.bool(), torch.ones_like(label, dtype=torch.bool)
    return label == cls + 1, label != IGNORE_LABEL if dataset.has_ignore else torch.ones_like(label, dtype=torch.bool)


def evaluate_priors(dataset: FewShotDataset, root: Path, *, cam_size: int = CAM_SIZE, resolution: str = "prior",
                    progress: bool = True, examples: int = 0) -> tuple[PriorQuality, list[dict[str, Any]]]:
    """Score every prior of the dataset's split and fold under ``root`` (``{image}--{class}.pt``).

    Args:
        dataset: the benchmark, split and fold (its episodes are not used; its pairs, images and masks are).
        cam_size: the side the model reads the priors at (files of another size are resized as the loader does).
        resolution: ``"prior"`` or ``"image"`` (see the module docstring).
        examples: how many (image, truth, prior) triples to keep for :func:`write_report`'s picture.
    Raises:
        MissingCAMError: prior files are missing (one line naming the first ones); DataError: a bad file.
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    root = Path(root)
    pairs = prior_pairs(dataset)
    _check_present(dataset, root, pairs)
    quality = PriorQuality(class_names_of(dataset))
    kept: list[dict[str, Any]] = []
    for name, cls in tqdm(pairs, unit="prior", desc="priors", disable=not progress, dynamic_ncols=True):
        prior = read_cam(cam_path(root, name, cls), cam_size).clamp(0, 1)           # (s, s)
        target, valid = _target(dataset, name, cls)                                  # (H, W)
        if resolution == "prior":
            target = resize_nearest(target.float(), prior.shape).bool()
            valid = resize_nearest(valid.float(), prior.shape).bool()
            scored = prior
        else:
            scored = resize_bilinear(prior[None, None], target.shape)[0, 0]
        quality.add(cls, scored, target, valid)
        if len(kept) < examples:
            kept.append({"name": name, "cls": cls, "prior": prior, "target": target, "valid": valid})
    return quality, kept


def report_title(dataset: FewShotDataset, root: Path) -> str:
    """``"Priors of PASCAL-5i val fold 0: /path"``."""
    fold = f" fold {dataset.fold}" if dataset.has_folds else ""
    return f"Priors of {TITLES[dataset.benchmark]} {dataset.split_name}{fold}: {root}"
