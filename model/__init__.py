"""Stage 2 of the method, IMR-HSNet: backbones, hypercorrelation, masking, 4D-conv learner, IMR cell, recompute,
checkpoints (the priors it reads are made by :mod:`priors`). Imports ``common`` only, never ``data``."""
from __future__ import annotations

from typing import Any

from model.imrhsnet import IMRHSNet

__all__ = ["IMRHSNet", "build_model"]


def build_model(backbone: str, **kwargs: Any) -> IMRHSNet:
    """``IMRHSNet(backbone, **kwargs)``; kwargs: ``backbone_weights``, ``masking``, ``use_original_imgsize``."""
    return IMRHSNet(backbone, **kwargs)
