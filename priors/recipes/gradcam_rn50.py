"""``gradcam-rn50``: the released recipe (CLIP RN50 Grad-CAM, :mod:`priors.recipes.clip_gradcam`) behind the
:class:`~priors.recipes.base.PriorRecipe` interface. The numbers are
:class:`~priors.recipes.clip_gradcam.ClipGradCAM`'s,
unchanged: this module only regroups a batch's (image, class) pairs into rows and back."""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence, Union

import torch
from PIL import Image
from torch import nn

from common.constants import CAM_SIZE
from common.io import names_sha256
from priors.recipes.clip_gradcam import PROMPT_TEMPLATE, ClipGradCAM, load_clip_with_identity
from priors.recipes.base import PriorRecipe

__all__ = ["GradCamRN50", "build_gradcam_rn50"]


class GradCamRN50(PriorRecipe):
    """The released CLIP RN50 Grad-CAM priors (see :mod:`priors.recipes.clip_gradcam`).

    Args:
        cam: the batched Grad-CAM over the benchmark's prompts.
        weights_sha256: SHA-256 of the CLIP weights file (None for weights that never were a file).
    """

    name = "gradcam-rn50"

    def __init__(self, cam: ClipGradCAM, weights_sha256: Optional[str]) -> None:
        super().__init__(cam.class_names)
        self.cam = cam
        self.weights_sha256 = weights_sha256

    @property
    def settings(self) -> dict[str, Any]:
        """The settings CAM folders of this recipe have recorded since format 2 (so that they resume); the
        model (RN50), the logit scale and the target layer are fixed by the recipe's version."""
        return {"clip_weights_sha256": self.weights_sha256, "precision": self.cam.precision,
                "clip_image_size": self.cam.image_size, "prompt_template": PROMPT_TEMPLATE,
                "class_names_sha256": names_sha256(self.class_names)}

    @property
    def device(self) -> torch.device:
        return self.cam.device

    @property
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        """CLIP's transform: PIL image -> (3, 224, 224)."""
        return self.cam.preprocess

    def compute(self, inputs: Sequence[torch.Tensor], class_lists: Sequence[Sequence[int]],
                cam_size: int = CAM_SIZE) -> list[torch.Tensor]:
        """One trunk forward for the images, one head backward for all their (image, class) rows."""
        lists = self.check_request(inputs, class_lists)
        if not inputs:
            return []
        feats = self.cam.features(torch.stack(list(inputs)))                   # (N, C4, 7, 7)
        rows = [i for i, classes in enumerate(lists) for _ in classes]
        flat = [c for classes in lists for c in classes]
        maps = self.cam.cams_from_features(feats[rows], flat, cam_size)         # (P, s, s)
        return list(torch.split(maps, [len(classes) for classes in lists]))


def build_gradcam_rn50(class_names: Sequence[str], *, weights: Optional[Union[str, os.PathLike]] = None,
                       model: Optional[nn.Module] = None, device: Union[str, torch.device] = "cpu",
                       precision: str = "fp32", amp: bool = False,
                       weights_sha256: Optional[str] = None) -> GradCamRN50:
    """The released recipe over ``class_names``.

    Args:
        weights: OpenAI's ``RN50.pt`` or a state dict with its keys (None: the cache, downloaded when online;
            ``"random"`` / ``"random:SEED"``: random weights; see :func:`priors.recipes.clip_gradcam.load_clip`).
            Ignored when ``model`` is given.
        model: an already loaded open_clip CLIP RN50 (e.g. random weights in tests).
        device, precision, amp: as :func:`priors.recipes.clip_gradcam.load_clip` and
            :class:`~priors.recipes.clip_gradcam.ClipGradCAM`.
        weights_sha256: recorded in the settings; when weights are loaded here, their identity (the file's
            SHA-256, or what random weights record) unless given.
    """
    if model is None:
        model, identity = load_clip_with_identity(weights, device=device, precision=precision)
        weights_sha256 = weights_sha256 or identity
    return GradCamRN50(ClipGradCAM(model.to(device), class_names, amp=amp), weights_sha256)

