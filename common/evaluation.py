"""Few-shot segmentation metrics: per-episode intersection/union, and mIoU / FB-IoU over a fold's classes.

The numbers follow the released evaluator (HSNet's ``common/evaluation.py`` and ``AverageMeter`` in
``common/logger.py``) exactly:

* :func:`classify_prediction` counts, per episode, the background (bin 0) and foreground (bin 1) pixels of the
  intersection, the prediction and the ground truth with ``torch.histc(bins=2, min=0, max=1)`` on float
  tensors; on PASCAL the boundary pixels (``query_ignore_idx``) are set to 255 in both the ground truth and
  the prediction, so ``histc`` (range [0, 1]) drops them from every count.
* :class:`IoUMeter` sums those counts per class; ``mIoU`` is the mean foreground IoU over the fold's classes,
  ``IoU_c = inter_c / max(union_c, 1)``; ``FB-IoU`` is the mean over {background, foreground} of
  ``sum_c inter / sum_c union`` over the same classes.

Two deliberate differences from the released code, neither of which changes a number it prints:
the released evaluator multiplies the batch's ``query_ignore_idx`` by 255 *in place* and writes 255 into the
caller's prediction; here inputs are never modified. And the sums are kept in float64 (the released float32
buffers stop counting pixels exactly past 2**24 per class, i.e. ~100 episodes of 400x400 images).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch

from common.constants import IGNORE_LABEL


def classify_prediction(pred_mask: torch.Tensor, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-episode background/foreground intersection and union areas.

    Args:
        pred_mask: (B, H, W) predicted 0/1 mask (any dtype; argmax output or the n-shot vote).
        batch: holds ``query_mask`` (B, H, W) 0/1 ground truth and, on PASCAL, ``query_ignore_idx``
            (B, H, W) 0/1 boundary map. Neither the batch nor ``pred_mask`` is modified.

    Returns:
        ``(area_inter, area_union)``, each (2, B) float32: row 0 background, row 1 foreground pixel counts.
    """
    gt_mask = batch["query_mask"].to(device=pred_mask.device, dtype=torch.float32)
    pred = pred_mask.to(torch.float32, copy=True)  # histc works on floats; copy so the caller's tensor is kept
    if gt_mask.shape != pred.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and query_mask {tuple(gt_mask.shape)} differ in shape")

    # Ignore the PASCAL boundary (as in PFENet, TPAMI 2020): 255 in gt and prediction is outside histc's range.
    ignore = batch.get("query_ignore_idx")
    if ignore is not None:
        ignore = ignore.to(device=pred.device, dtype=torch.float32)
        if torch.logical_and(ignore, gt_mask).any():
            raise ValueError("query_ignore_idx overlaps the foreground of query_mask")
        gt_mask = gt_mask + ignore * IGNORE_LABEL
        pred = torch.where(gt_mask == IGNORE_LABEL, torch.full_like(pred, IGNORE_LABEL), pred)

    area_inter, area_pred, area_gt = [], [], []
    for _pred, _gt in zip(pred, gt_mask):
        _inter = _pred[_pred == _gt]
        area_inter.append(torch.histc(_inter, bins=2, min=0, max=1) if _inter.numel()
                          else torch.zeros(2, device=pred.device))
        area_pred.append(torch.histc(_pred, bins=2, min=0, max=1))
        area_gt.append(torch.histc(_gt, bins=2, min=0, max=1))
    inter = torch.stack(area_inter).t()  # (2, B)
    union = torch.stack(area_pred).t() + torch.stack(area_gt).t() - inter
    return inter, union


def iou_from_sums(intersection: torch.Tensor, union: torch.Tensor, class_ids: torch.Tensor) -> tuple[float, float]:
    """``(mIoU, FB-IoU)`` in percent from per-class sums, as released.

    Args:
        intersection, union: (2, nclass) float64 pixel counts summed per class (row 0 background, 1 foreground).
        class_ids: (C,) long, the fold's classes that both numbers average over.

    The one formula behind :meth:`IoUMeter.compute_iou` and the numbers recomputed from per-episode records
    (``engine.episode_records``): the counts are integers, so their float64 sums are exact in any order and
    both give the same bits.
    """
    iou = (intersection / torch.clamp(union, min=1.0)).index_select(1, class_ids)
    miou = float(iou[1].mean() * 100)
    inter = intersection.index_select(1, class_ids).sum(dim=1)
    union = union.index_select(1, class_ids).sum(dim=1)
    fb_iou = float((inter / union).mean() * 100) if bool((union > 0).all()) else math.nan
    return miou, fb_iou


class IoUMeter:
    """Accumulates per-class intersection/union and the losses of an epoch (the released ``AverageMeter``).

    Args:
        class_ids: the fold's classes (0-based) that mIoU and FB-IoU average over (``dataset.class_ids``).
        nclass: number of classes of the benchmark (``data.benchmarks.NCLASS``).
        device: where the buffers live (the prediction's device, so updates need no copies).
    """

    def __init__(self, class_ids: Sequence[int], nclass: int, device: torch.device | str = "cpu") -> None:
        self.class_ids = torch.as_tensor(list(class_ids), dtype=torch.long, device=device)
        if self.class_ids.numel() == 0 or int(self.class_ids.max()) >= nclass or int(self.class_ids.min()) < 0:
            raise ValueError(f"class_ids {list(class_ids)} must be a non-empty subset of 0..{nclass - 1}")
        self.nclass = nclass
        self.device = torch.device(device)
        self.intersection = torch.zeros(2, nclass, dtype=torch.float64, device=device)  # (2, nclass)
        self.union = torch.zeros(2, nclass, dtype=torch.float64, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.loss_count = torch.zeros((), dtype=torch.float64, device=device)
        self.episodes = torch.zeros((), dtype=torch.float64, device=device)
        self.last_loss: Optional[float] = None

    @classmethod
    def for_dataset(cls, dataset: Any, device: torch.device | str = "cpu") -> "IoUMeter":
        """Build from a dataset with ``class_ids`` and ``nclass`` attributes (as the released meter)."""
        return cls(dataset.class_ids, dataset.nclass, device)

    def update(self, area_inter: torch.Tensor, area_union: torch.Tensor, class_id: torch.Tensor,
               loss: Optional[torch.Tensor | float] = None) -> None:
        """Add a batch: ``area_*`` (2, B) from :func:`classify_prediction`, ``class_id`` (B,), mean batch loss."""
        class_id = class_id.to(device=self.device, dtype=torch.long).view(-1)
        self.intersection.index_add_(1, class_id, area_inter.to(self.device, torch.float64))
        self.union.index_add_(1, class_id, area_union.to(self.device, torch.float64))
        self.episodes += class_id.numel()
        if loss is not None:
            loss_value = float(loss)
            self.loss_sum += loss_value
            self.loss_count += 1
            self.last_loss = loss_value

    def all_reduce(self) -> None:
        """Sum the buffers over all ranks of the default process group (no-op when not distributed)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        buffers = [self.intersection, self.union, self.loss_sum, self.loss_count, self.episodes]
        packed = torch.cat([buffer.flatten() for buffer in buffers])  # one collective for all of them
        dist.all_reduce(packed)
        for buffer, part in zip(buffers, packed.split([buffer.numel() for buffer in buffers])):
            buffer.copy_(part.view_as(buffer))

    def class_iou(self) -> torch.Tensor:
        """(2, nclass) IoU of every class (background row 0, foreground row 1), union clamped to >= 1."""
        return self.intersection / torch.clamp(self.union, min=1.0)

    def compute_iou(self) -> tuple[float, float]:
        """``(mIoU, FB-IoU)`` in percent over the fold's classes, as released."""
        return iou_from_sums(self.intersection, self.union, self.class_ids)

    def per_class_iou(self) -> dict[int, float]:
        """Foreground IoU (percent) of each of the fold's classes, keyed by 0-based class id."""
        iou = self.class_iou()[1]
        return {int(c): float(iou[c] * 100) for c in self.class_ids.tolist()}

    @property
    def avg_loss(self) -> float:
        """Mean of the per-batch losses (0.0 when none were given, as released ``utils.mean``)."""
        count = float(self.loss_count)
        return float(self.loss_sum) / count if count > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """Plain numbers for logs and JSON."""
        miou, fb_iou = self.compute_iou()
        return {"miou": miou, "fb_iou": fb_iou, "loss": self.avg_loss, "episodes": int(self.episodes),
                "per_class_iou": self.per_class_iou()}
