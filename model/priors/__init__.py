"""Prior recipes side by side: each turns images and their class names into coarse masks (CAM priors).

Chosen by name from :data:`PRIOR_RECIPES`, a dict of builder functions (as segment-anything's ``build_sam.py``):

* ``gradcam-rn50`` (default): the released recipe, CLIP RN50 Grad-CAM (:mod:`model.priors.gradcam_rn50` over
  :mod:`model.clip_gradcam`);
* ``clip-es``: CLIP-ES refined CAMs, CLIP ViT-B/16 (:mod:`model.priors.clip_es`).

Every builder takes the benchmark's class names first and keyword options (``weights``, ``model``, ``device``,
``precision``, ``weights_sha256``, and its own); every recipe is a :class:`~model.priors.base.PriorRecipe`:
``recipe.name``, ``recipe.settings`` (for the CAM folder's manifest), ``recipe.preprocess`` (PIL image -> input,
in DataLoader workers) and ``recipe.compute(inputs, class_lists, cam_size)``. Priors made elsewhere
(published pseudo-masks) are imported by :mod:`data.priors` instead.

    recipe = build_prior("clip-es", PASCAL_CLASSES, weights="ViT-B-16.pt", benchmark="pascal")
    maps = recipe([image], [[class_index]], cam_size=50)[0]       # (1, 50, 50) float32 in [0, 1]
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from model.priors.base import PriorRecipe
from model.priors.clip_es import build_clip_es
from model.priors.gradcam_rn50 import build_gradcam_rn50

__all__ = ["DEFAULT_PRIOR", "PRIOR_RECIPES", "PriorRecipe", "build_prior"]

DEFAULT_PRIOR = "gradcam-rn50"
PRIOR_RECIPES: dict[str, Callable[..., PriorRecipe]] = {
    "gradcam-rn50": build_gradcam_rn50,
    "clip-es": build_clip_es,
}


def build_prior(name: str, class_names: Sequence[str], **options: Any) -> PriorRecipe:
    """The recipe ``name`` over ``class_names``, built with the builder's keyword ``options``.

    Raises:
        ValueError: an unknown recipe name.
    """
    if name not in PRIOR_RECIPES:
        raise ValueError(f"unknown prior recipe {name!r}; choose one of {', '.join(PRIOR_RECIPES)}")
    return PRIOR_RECIPES[name](class_names, **options)
