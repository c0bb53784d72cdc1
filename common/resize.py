"""The one bilinear resize of the method (model, CAM files, predictor)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def resize_bilinear(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True``, the interpolation used everywhere in the released model.

    Args:
        x: (B, C, h, w).
        size: the new (H, W).
    Returns:
        (B, C, H, W).
    """
    return F.interpolate(x, tuple(int(s) for s in size), mode="bilinear", align_corners=True)
