"""How a COCO-20i label PNG is painted from an image's instance annotations (:data:`COCO_PAINT_ORDER`; used by
``data.prepare`` on the real COCO 2014 annotations and by ``data.synthetic`` on its own). The labels are HSNet's
class index + 1 (person=1, ..., toothbrush=80).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["COCO_PAINT_ORDER", "paint_coco_mask"]

COCO_PAINT_ORDER = (
    "paint every annotation of an image (crowd included) into a zero uint8 (H, W) array in ascending order of "
    "(-ann['area'], ann['id']) -- larger first, smaller on top, ties by smaller id -- setting pixels where "
    "annToMask(ann) == 1 to 1 + the rank of ann['category_id'] among the 80 sorted category ids"
)


def paint_coco_mask(anns: Sequence[dict[str, Any]], height: int, width: int,
                    ann_to_mask: Callable[[dict[str, Any]], np.ndarray],
                    catid_to_label: dict[int, int]) -> np.ndarray:
    """Paint an image's annotations following COCO_PAINT_ORDER.

    Args:
        anns: the image's annotations (crowd included), as in the instances JSON.
        height, width: image size.
        ann_to_mask: callable ann -> (H, W) {0, 1} array, e.g. ``pycocotools.coco.COCO(...).annToMask``.
        catid_to_label: official category id -> contiguous label 1..80.
    Returns:
        (H, W) uint8 label mask, 0 background.
    """
    out = np.zeros((height, width), np.uint8)
    for ann in sorted(anns, key=lambda ann: (-float(ann["area"]), int(ann["id"]))):  # larger first, then by id
        out[ann_to_mask(ann) > 0] = catid_to_label[int(ann["category_id"])]
    return out
