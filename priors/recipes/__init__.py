"""Prior recipes side by side: each turns images and their class names into coarse masks (CAM priors).

Chosen by name from :data:`RECIPES`, a dict of :class:`~priors.recipes.base.RecipeSpec` (a recipe's builder,
imported on first use, the id its CAM folders record and its CAM-job flags; a registry as segment-anything's
``build_sam.py``):

* ``gradcam-rn50`` (default): the released recipe, CLIP RN50 Grad-CAM (:mod:`priors.recipes.gradcam_rn50` over
  :mod:`priors.recipes.clip_gradcam`);
* ``clip-es``: CLIP-ES refined CAMs, CLIP ViT-B/16 (:mod:`priors.recipes.clip_es`).

Every builder takes the benchmark's class names first and keyword options (:attr:`RecipeSpec.builder`); every
recipe is a :class:`~priors.recipes.base.PriorRecipe`. The CAM job (:mod:`priors.cam_job`, ``generate_cam_*.py
--prior NAME``) builds them from here; priors made elsewhere (published pseudo-masks) are imported by
:mod:`data.priors` instead. A new recipe: a module in this folder and its entry in :data:`RECIPES`
(docs/extending.md).

    recipe = build_prior("clip-es", PASCAL_CLASSES, weights="ViT-B-16.pt", benchmark="pascal")
    maps = recipe([image], [[class_index]], cam_size=50)[0]       # (1, 50, 50) float32 in [0, 1]
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from common.views import LiveMapping

from common.flags import flag_options
from data.priors import IMPORTED_RECIPE
from priors.recipes.base import PriorRecipe, RecipeFlag, RecipeSpec
from priors.recipes.clip_es_names import LABEL_MODES

__all__ = ["DEFAULT_PRIOR", "PRIOR_RECIPES", "PRIOR_RECIPE_IDS", "RECIPES", "PriorRecipe", "RecipeFlag",
           "RecipeSpec", "build_prior", "recipe_name", "register_recipe"]

RECIPES: dict[str, RecipeSpec] = {spec.name: spec for spec in (
    RecipeSpec(
        "gradcam-rn50", "clip-rn50-gradcam-released/1",  # the id its folders had before recipes had names
        "priors.recipes.gradcam_rn50:build_gradcam_rn50", "gradcam-rn50 = CLIP RN50 Grad-CAM, the released recipe",
        flags=(RecipeFlag(("--amp",), flag_options("--amp", "cam"), note=" (it autocasts the ResNet trunk)"),),
        options=lambda args, benchmark: {"amp": args.amp}),
    RecipeSpec(
        "clip-es", "clip-es/1", "priors.recipes.clip_es:build_clip_es",
        "clip-es = CLIP-ES refined CAMs, CLIP ViT-B/16",
        flags=(RecipeFlag(("--clip-es-labels",), {
            "dest": "clip_es_labels", "choices": LABEL_MODES, "default": None,
            "help": "--prior clip-es: the softmax over all of the benchmark's class names (all, the default: no "
                    "label beyond the pair's own) or over the image's own label list, all the classes the split "
                    "lists give it (image: CLIP-ES's recipe, a label leak for few-shot queries)"}),),
        options=lambda args, benchmark: {"benchmark": benchmark, "label_mode": args.clip_es_labels or LABEL_MODES[0]},
        command_flags=lambda settings: (["--clip-es-labels", str(settings["label_mode"])]
                                        if "label_mode" in settings else [])),
)}
DEFAULT_PRIOR = "gradcam-rn50"  # the released recipe


# By name: the builders, and the ids CAM folders record (``imported``: priors made elsewhere).
PRIOR_RECIPES: Mapping[str, Callable[..., PriorRecipe]] = LiveMapping(lambda: {n: s.build for n, s in RECIPES.items()})
PRIOR_RECIPE_IDS: Mapping[str, str] = LiveMapping(lambda: {**{n: s.recipe_id for n, s in RECIPES.items()},
                                                     "imported": IMPORTED_RECIPE})


def register_recipe(spec: RecipeSpec) -> RecipeSpec:
    """Add ``spec`` to the registry (a recipe defined outside this folder: a test, a notebook, a plug-in).

    Raises:
        ValueError: the name or the recipe id is taken.
    """
    if spec.name in PRIOR_RECIPE_IDS or spec.recipe_id in PRIOR_RECIPE_IDS.values():
        raise ValueError(f"prior recipe {spec.name!r} ({spec.recipe_id}) is already registered")
    RECIPES[spec.name] = spec
    return spec


def recipe_name(recipe_id: str) -> str | None:
    """The registered name of the recipe whose folders record ``recipe_id`` (None: not a registered one)."""
    return next((name for name, known in PRIOR_RECIPE_IDS.items() if known == recipe_id), None)


def build_prior(name: str, class_names: Sequence[str], **options: Any) -> PriorRecipe:
    """The recipe ``name`` over ``class_names``, built with the builder's keyword ``options``.

    Raises:
        ValueError: an unknown recipe name.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown prior recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name].build(class_names, **options)
