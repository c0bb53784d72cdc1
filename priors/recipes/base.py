"""What every prior recipe offers: a name, its settings, and images + class indices in, coarse masks out.

A *prior* is the coarse mask of one (image, class) pair that IMR-HSNet reads instead of a ground-truth mask:
a float32 (cam_size, cam_size) map in [0, 1] (the size the model reads: ``img_size / 8``, 50 for the released
400 px), saved as ``{image}--{class}.pt``. A *recipe* makes them from the image and the class's name.

The work is split in two so that a job can decode images in DataLoader workers: :meth:`PriorRecipe.preprocess`
(one PIL image -> whatever the recipe needs, picklable, no model) and :meth:`PriorRecipe.compute` (a batch of
those and, per image, the classes wanted -> one map per class).
"""
from __future__ import annotations

import abc
import argparse
from dataclasses import dataclass
import importlib
from typing import Any, Callable, ClassVar, Mapping, Sequence, Union

import torch
from PIL import Image

from common.constants import CAM_SIZE

__all__ = ["PriorRecipe", "RecipeFlag", "RecipeSpec"]


class PriorRecipe(abc.ABC):
    """A way to turn an image and its image-level label into a coarse mask.

    Attributes:
        name: the recipe's registry name (``priors.recipes.RECIPES``), e.g. ``"gradcam-rn50"``.
        class_names: the benchmark's classes; class index ``c`` means ``class_names[c]``.
    """

    name: ClassVar[str] = ""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = tuple(class_names)
        if not self.class_names:
            raise ValueError("a prior recipe needs at least one class name")

    @property
    def version(self) -> str:
        """The recipe's id with its version (``clip-es/1``): what a CAM folder's manifest records as its
        ``recipe`` (its registry entry's :attr:`RecipeSpec.recipe_id`)."""
        from priors.recipes import PRIOR_RECIPE_IDS

        return PRIOR_RECIPE_IDS[self.name]

    @property
    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything the maps depend on besides the image, the class and the saved size (weights' SHA-256,
        precision, prompts, ``class_names_sha256``, ...), JSON-serialisable: what a CAM folder's manifest records
        (with ``cam_size``)."""

    @property
    def reads_image_labels(self) -> bool:
        """Whether an image's maps depend on the other classes asked for it (a softmax over the image's own
        label list): then a job passes every class the image is listed under, not only the missing ones."""
        return False

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Where the recipe computes."""

    @property
    @abc.abstractmethod
    def preprocess(self) -> Callable[[Image.Image], Any]:
        """A picklable callable (it runs in DataLoader workers): PIL image -> the recipe's input for it."""

    @abc.abstractmethod
    def compute(self, inputs: Sequence[Any], class_lists: Sequence[Sequence[int]],
                cam_size: int = CAM_SIZE) -> list[torch.Tensor]:
        """The priors of a batch.

        Args:
            inputs: :attr:`preprocess` outputs, one per image.
            class_lists: per image, the class indices whose priors are wanted (a recipe whose softmax runs
                over the image's own labels reads them from here, so pass all of them).
            cam_size: side of the returned maps.
        Returns:
            per image, a (len(class_lists[i]), cam_size, cam_size) float32 CPU tensor in [0, 1].
        """

    def __call__(self, images: Sequence[Image.Image], class_lists: Sequence[Sequence[int]],
                 cam_size: int = CAM_SIZE) -> list[torch.Tensor]:
        """:meth:`compute` on PIL images (preprocessed here, in this process)."""
        return self.compute([self.preprocess(image) for image in images], class_lists, cam_size)

    def check_request(self, inputs: Sequence[Any], class_lists: Sequence[Sequence[int]]) -> list[list[int]]:
        """``class_lists`` as lists of ints, checked against ``inputs`` and the vocabulary (ValueError)."""
        if len(inputs) != len(class_lists):
            raise ValueError(f"{len(inputs)} images but {len(class_lists)} class lists")
        lists = [[int(c) for c in classes] for classes in class_lists]
        bad = sorted({c for classes in lists for c in classes if not 0 <= c < len(self.class_names)})
        if bad:
            raise ValueError(f"class indices {bad[:5]} outside 0..{len(self.class_names) - 1}")
        return lists


@dataclass(frozen=True)
class RecipeFlag:
    """A CAM-job flag of one recipe (``generate_cam_*.py``): argparse's ``add_argument`` names and keywords;
    given with another ``--prior``, it is refused with ``only with --prior NAME`` and ``note``."""

    names: tuple[str, ...]
    options: Mapping[str, Any]
    note: str = ""


@dataclass(frozen=True)
class RecipeSpec:
    """One entry of the recipe registry (:data:`priors.recipes.RECIPES`): everything the CAM job, the run
    checks and the docs need to know of a recipe.

    Attributes:
        name: what ``--prior`` takes.
        recipe_id: the id its CAM folders record: the name and a version after the slash (``clip-es/1``), bumped
            whenever the computation changes.
        builder: ``"module:function"`` (imported on first use, so that reading the registry stays light), or
            the function: ``build(class_names, *, weights, device, precision, weights_sha256=None, model=None,
            **options)`` -> :class:`PriorRecipe`.
        summary: a few words for ``--prior``'s help.
        flags: the recipe's own CAM-job flags.
        options: the builder's own keyword options from the CAM job's parsed flags and the benchmark.
        command_flags: the flags that remake a folder of it, from its manifest's settings (in the hint a run
            prints when CAM files are missing).
    """

    name: str
    recipe_id: str
    builder: Union[str, Callable[..., PriorRecipe]]
    summary: str
    flags: tuple[RecipeFlag, ...] = ()
    options: Callable[[argparse.Namespace, str], dict[str, Any]] = lambda args, benchmark: {}
    command_flags: Callable[[Mapping[str, Any]], list[str]] = lambda settings: []

    def build(self, class_names: Sequence[str], **options: Any) -> PriorRecipe:
        """The recipe over ``class_names`` (the builder imported here on first use)."""
        builder = self.builder
        if isinstance(builder, str):
            module, _, function = builder.partition(":")
            builder = getattr(importlib.import_module(module), function)
        return builder(class_names, **options)
