"""Validation pictures for TensorBoard that a person can read without the code at hand.

One picture per shown episode, three tiles left to right, each resized to ``tile`` pixels:

* the support image with its *prior* (the CAM the model is given in place of a mask) as a heat map,
  blue (low) to red (high), scaled to the prior's own maximum;
* the query with its ground-truth mask in green (filled and outlined);
* the query with the predicted mask in red (filled and outlined), and the ground truth's outline in thin green,
  so a miss shows as a green outline with nothing red inside;

under a title line (class name, the episode's foreground IoU in percent, which validation episode it is) and a
caption with a colour swatch over each tile. Nothing here changes its inputs.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from common.vis import apply_mask, font, mask_at, to_uint8_image

GROUND_TRUTH_COLOR = (40, 200, 60)  # green
PREDICTION_COLOR = (255, 50, 50)  # red
PRIOR_ALPHA = 0.45
MASK_ALPHA = 0.4  # masks are filled at this opacity and outlined in full colour
TILE = 192  # pixels per tile side: captions legible when TensorBoard scales the picture to its card
CAPTIONS = ("support + prior", "query + ground truth", "query + prediction")


def heat_colors(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) float RGB in [0, 255] on a blue-cyan-yellow-red ("jet") scale."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    centres = np.array([3.0, 2.0, 1.0])  # red peaks at 3/4, green at 1/2, blue at 1/4 of the scale
    return 255.0 * np.clip(1.5 - np.abs(4.0 * v - centres), 0.0, 1.0)


def prior_overlay(image: np.ndarray, prior: torch.Tensor, alpha: float = PRIOR_ALPHA) -> np.ndarray:
    """``image`` (H, W, 3) uint8 blended with the heat map of ``prior`` (h, w) (bilinearly resized to (H, W),
    negative values read as 0, divided by its maximum): a new (H, W, 3) uint8 array."""
    prior = prior.detach().float().cpu().clamp(min=0)
    size = image.shape[:2]
    if tuple(prior.shape) != size:
        prior = F.interpolate(prior[None, None], size, mode="bilinear", align_corners=False)[0, 0]
    peak = float(prior.max())
    scaled = (prior / peak).numpy() if peak > 0 else np.zeros(size, np.float32)
    out = image.astype(np.float64) * (1 - alpha) + alpha * heat_colors(scaled)
    return out.astype(np.uint8)


def outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The pixels of a (H, W) 0/1 mask within ``width`` pixels of its edge (4-neighbour erosion), as bool."""
    inner = mask.astype(bool)
    for _ in range(width):
        padded = np.pad(inner, 1, constant_values=False)
        inner = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2]
                 & padded[1:-1, 2:])
    return mask.astype(bool) & ~inner


def _outlined(image: np.ndarray, mask: np.ndarray, color: Sequence[int], width: int = 2) -> np.ndarray:
    """A copy of ``image`` with the outline of ``mask`` drawn in ``color``: visible on any object's colour."""
    out = image.copy()
    out[outline(mask, width)] = color
    return out


def _resized(tile: np.ndarray, side: int) -> np.ndarray:
    if tile.shape[:2] == (side, side):
        return tile
    return np.asarray(Image.fromarray(tile).resize((side, side), Image.BILINEAR))


HEAT = "heat"  # a caption's swatch: the heat scale (low to high) instead of one colour


def _header(width: int, tile: int, title: str, captions: Sequence[tuple[str, Union[str, Sequence[int]]]]) -> np.ndarray:
    """A white band: ``title`` on the first line; on the second, over each tile, a swatch (an RGB colour, or
    :data:`HEAT` for the heat scale) and its caption."""
    size = max(11, tile // 12)  # the largest text size, down to 8, at which each caption and its swatch fit a tile
    while size > 8 and max(font(size).getlength(caption) for caption, _ in captions) + 3 * size + 8 > tile:
        size -= 1
    line = size + size // 2
    band = Image.new("RGB", (width, 2 * line), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    draw.text((3, size // 4), title, fill=(0, 0, 0), font=font(size))
    top = line + size // 4
    for k, (caption, color) in enumerate(captions):
        x = k * tile + 3
        swatch_w = 2 * size if color == HEAT else size - 1
        if color == HEAT:
            ramp = heat_colors(np.tile(np.linspace(0, 1, swatch_w), (size - 1, 1))).astype(np.uint8)
            band.paste(Image.fromarray(ramp), (x, top))
        else:
            draw.rectangle((x, top, x + swatch_w - 1, top + size - 2), fill=tuple(color))
        draw.rectangle((x, top, x + swatch_w - 1, top + size - 2), outline=(0, 0, 0))
        draw.text((x + swatch_w + 3, top), caption, fill=(0, 0, 0), font=font(size))
    return np.asarray(band)


def watch_panel(support_img: torch.Tensor, support_prior: torch.Tensor, query_img: torch.Tensor,
                query_mask: torch.Tensor, pred_mask: torch.Tensor, *, title: str, tile: int = TILE) -> np.ndarray:
    """One validation episode as a captioned (2 * line + tile, 3 * tile, 3) uint8 picture.

    Args:
        support_img: (3, S, S) normalized; support_prior: (h, w) the support's CAM prior.
        query_img: (3, S, S) normalized; query_mask, pred_mask: (H', W') 0/1 (resized to (S, S) if needed).
        title: the title line, e.g. ``"aeroplane (0)   IoU 53.2   val episode 12"``.
        tile: the side of each tile in pixels.
    """
    support = _resized(prior_overlay(to_uint8_image(support_img), support_prior), tile)
    query = _resized(to_uint8_image(query_img), tile)
    truth, pred = ((mask_at(mask, (tile, tile)) == 1).astype(np.uint8) for mask in (query_mask, pred_mask))
    with_truth = _outlined(apply_mask(query, truth, GROUND_TRUTH_COLOR, alpha=MASK_ALPHA), truth, GROUND_TRUTH_COLOR)
    with_pred = _outlined(apply_mask(query, pred, PREDICTION_COLOR, alpha=MASK_ALPHA), pred, PREDICTION_COLOR)
    with_pred = _outlined(with_pred, truth, GROUND_TRUTH_COLOR, width=1)  # where it should have been
    strip = np.concatenate([support, with_truth, with_pred], axis=1)
    header = _header(strip.shape[1], tile, title, list(zip(CAPTIONS, (HEAT, GROUND_TRUTH_COLOR, PREDICTION_COLOR))))
    return np.concatenate([header, strip], axis=0)


def episode_title(class_name: str, iou: float, episode: int) -> str:
    """The title line of :func:`watch_panel`: class, foreground IoU (percent), validation episode index."""
    return f"{class_name}   IoU {iou:.1f}   val episode {episode}"
