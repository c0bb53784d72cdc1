"""Pictures of predictions: support masks in blue, prediction and query ground truth in red (as released).

:func:`episode_panel` lays one episode out left to right -- the K masked supports, the query with the
prediction, the query with its ground truth -- and :class:`Visualizer` writes one JPEG per episode with the
released file name ``{batch}_{sample}_class-{c}_iou-{iou}.jpg`` (into ``<run folder>/vis`` rather than ``./vis``),
labelled for a reader (the released pictures had no text): a title line with the class name, its id and the
episode's foreground IoU, and a caption over each tile (``support 1`` .. ``support K``, ``prediction``,
``ground truth``). Nothing here changes its inputs.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

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


def mask_at(mask: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
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


def episode_tiles(support_imgs: torch.Tensor, support_masks: torch.Tensor, query_img: torch.Tensor,
                  query_mask: torch.Tensor, pred_mask: torch.Tensor) -> list[np.ndarray]:
    """The K + 2 tiles of an episode, each (H, W, 3) uint8: the masked supports, the query with the prediction,
    the query with its ground truth (arguments as :func:`episode_panel`)."""
    size = tuple(query_img.shape[-2:])
    tiles = [apply_mask(to_uint8_image(img), mask_at(mask, tuple(img.shape[-2:])), SUPPORT_COLOR)
             for img, mask in zip(support_imgs, support_masks)]
    query = to_uint8_image(query_img)
    return tiles + [apply_mask(query, mask_at(mask, size), QUERY_COLOR) for mask in (pred_mask, query_mask)]


def _strip(tiles: Sequence[np.ndarray]) -> np.ndarray:
    height = max(tile.shape[0] for tile in tiles)
    return np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles], axis=1)


def episode_panel(support_imgs: torch.Tensor, support_masks: torch.Tensor, query_img: torch.Tensor,
                  query_mask: torch.Tensor, pred_mask: torch.Tensor) -> np.ndarray:
    """One episode as an (H, (K + 2) * W, 3) uint8 strip.

    Args:
        support_imgs: (K, 3, H, W) normalized; support_masks: (K, H, W) 0/1.
        query_img: (3, H, W) normalized; query_mask, pred_mask: (H', W') 0/1 (resized to (H, W) if needed).
    """
    return _strip(episode_tiles(support_imgs, support_masks, query_img, query_mask, pred_mask))


@lru_cache(maxsize=8)
def font(size: int) -> Any:
    """PIL's default font at ``size`` pixels (a fixed-size bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1)
    except TypeError:
        return ImageFont.load_default()


def _text_band(width: int, texts: Sequence[tuple[int, str]], size: int) -> np.ndarray:
    """A white (h, width, 3) band with each ``(x, text)`` written in black from x; text past the edge is cut."""
    band = Image.new("RGB", (width, size + size // 2), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    for x, text in texts:
        draw.text((x + 2, size // 4), text, fill=(0, 0, 0), font=font(size))
    return np.asarray(band)


def labelled_episode_panel(support_imgs: torch.Tensor, support_masks: torch.Tensor, query_img: torch.Tensor,
                           query_mask: torch.Tensor, pred_mask: torch.Tensor, *, class_name: str,
                           iou: Optional[float] = None) -> np.ndarray:
    """:func:`episode_panel` with a title (``class_name``, the foreground ``iou`` in percent) and tile captions
    (``support 1`` .. ``support K``, ``prediction``, ``ground truth``): (h + H, (K + 2) * W, 3) uint8."""
    tiles = episode_tiles(support_imgs, support_masks, query_img, query_mask, pred_mask)
    captions = [f"support {k + 1}" for k in range(len(tiles) - 2)] + ["prediction", "ground truth"]
    title = f"class: {class_name}" + (f"   IoU: {iou:.1f}" if iou is not None else "")
    strip = _strip(tiles)
    size = max(10, min(24, strip.shape[0] // 16))  # text height: legible on 64 px tiles and on 400 px ones
    starts = np.cumsum([0] + [tile.shape[1] for tile in tiles[:-1]])
    header = np.concatenate([_text_band(strip.shape[1], [(0, title)], size),
                             _text_band(strip.shape[1], list(zip(starts.tolist(), captions)), size)], axis=0)
    return np.concatenate([header, strip], axis=0)


class Visualizer:
    """Writes the ``--visualize`` JPEGs of test.py into ``out_dir``; ``class_names`` (0-based class id -> name)
    names the class in each picture's title (without it, or for an id it lacks: ``class <id>``)."""

    def __init__(self, out_dir: Path, class_names: Optional[Mapping[int, str]] = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.class_names = dict(class_names or {})

    def save_batch(self, batch: Mapping[str, Any], pred_mask: torch.Tensor, batch_idx: int,
                   iou: Optional[torch.Tensor] = None) -> list[Path]:
        """One JPEG per episode; ``iou`` (B,) is the foreground IoU (a fraction) written into the name (as
        released) and, in percent, into the picture's title."""
        paths = []
        for i in range(pred_mask.shape[0]):
            value = float(iou[i]) if iou is not None else 0.0
            class_id = int(batch["class_id"][i])
            name = self.class_names.get(class_id)
            panel = labelled_episode_panel(
                batch["support_imgs"][i], batch["support_masks"][i], batch["query_img"][i], batch["query_mask"][i],
                pred_mask[i], class_name=f"{name} ({class_id})" if name else f"class {class_id}",
                iou=100.0 * value if iou is not None else None)
            path = self.out_dir / f"{batch_idx}_{i}_class-{class_id}_iou-{value:.2f}.jpg"
            Image.fromarray(panel).save(path)
            paths.append(path)
        return paths
