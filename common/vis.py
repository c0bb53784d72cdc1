"""Pictures of predictions: support masks in blue, prediction and query ground truth in red (as released).

:func:`episode_panel` lays one episode out left to right -- the K masked supports, the query with the
prediction, the query with its ground truth -- and :class:`Visualizer` writes one JPEG per episode with the
released file name ``{batch}_{sample}_class-{c}_iou-{iou}.jpg`` (into ``<run folder>/vis`` rather than ``./vis``).
Nothing here changes its inputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from common.constants import IMAGENET_MEAN, IMAGENET_STD

SUPPORT_COLOR = (102, 140, 255)  # blue
QUERY_COLOR = (255, 50, 50)  # red


def to_uint8_image(img: torch.Tensor) -> np.ndarray:
    """Normalized (3, H, W) image -> (H, W, 3) uint8 (ImageNet mean/std undone)."""
    img = img.detach().float().cpu()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (img * std + mean).clamp(0, 1)
    # ToPILImage's rounding: multiply by 255 and truncate.
    return (rgb * 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _mask_at(mask: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(h, w) mask -> (H, W) uint8 numpy, nearest-resized when the sizes differ (original-size scoring)."""
    mask = mask.detach().float().cpu()
    if tuple(mask.shape[-2:]) != size:
        mask = F.interpolate(mask[None, None], size, mode="nearest")[0, 0]
    return mask.numpy().astype(np.uint8)


def apply_mask(image: np.ndarray, mask: np.ndarray, color: Sequence[int], alpha: float = 0.5) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 blended with ``color`` where ``mask == 1``."""
    out = image.astype(np.float64)
    sel = mask == 1
    out[sel] = out[sel] * (1 - alpha) + alpha * np.asarray(color, dtype=np.float64)
    return out.astype(np.uint8)


def episode_panel(support_imgs: torch.Tensor, support_masks: torch.Tensor, query_img: torch.Tensor,
                  query_mask: torch.Tensor, pred_mask: torch.Tensor) -> np.ndarray:
    """One episode as an (H, (K + 2) * W, 3) uint8 strip.

    Args:
        support_imgs: (K, 3, H, W) normalized; support_masks: (K, H, W) 0/1.
        query_img: (3, H, W) normalized; query_mask, pred_mask: (H', W') 0/1 (resized to (H, W) if needed).
    """
    size = tuple(query_img.shape[-2:])
    tiles = [apply_mask(to_uint8_image(img), _mask_at(mask, tuple(img.shape[-2:])), SUPPORT_COLOR)
             for img, mask in zip(support_imgs, support_masks)]
    query = to_uint8_image(query_img)
    tiles.append(apply_mask(query, _mask_at(pred_mask, size), QUERY_COLOR))
    tiles.append(apply_mask(query, _mask_at(query_mask, size), QUERY_COLOR))
    height = max(tile.shape[0] for tile in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
    return np.concatenate(tiles, axis=1)


def batch_panels(batch: Mapping[str, Any], pred_mask: torch.Tensor, limit: int = 4) -> np.ndarray:
    """The first ``limit`` episodes of a batch stacked vertically, for TensorBoard: (N * H, (K + 2) * W, 3)."""
    rows = [episode_panel(batch["support_imgs"][i], batch["support_masks"][i], batch["query_img"][i],
                          batch["query_mask"][i], pred_mask[i])
            for i in range(min(limit, pred_mask.shape[0]))]
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, axis=0)


class Visualizer:
    """Writes the ``--visualize`` JPEGs of test.py into ``out_dir``."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def save_batch(self, batch: Mapping[str, Any], pred_mask: torch.Tensor, batch_idx: int,
                   iou: Optional[torch.Tensor] = None) -> list[Path]:
        """One JPEG per episode; ``iou`` (B,) is the foreground IoU written into the name (as released)."""
        paths = []
        for i in range(pred_mask.shape[0]):
            panel = episode_panel(batch["support_imgs"][i], batch["support_masks"][i], batch["query_img"][i],
                                  batch["query_mask"][i], pred_mask[i])
            value = float(iou[i]) if iou is not None else 0.0
            class_id = int(batch["class_id"][i])
            path = self.out_dir / f"{batch_idx}_{i}_class-{class_id}_iou-{value:.2f}.jpg"
            Image.fromarray(panel).save(path)
            paths.append(path)
        return paths
