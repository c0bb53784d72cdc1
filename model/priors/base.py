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
import hashlib
from typing import Any, Callable, ClassVar, Sequence

import torch
from PIL import Image

__all__ = ["PriorRecipe", "names_sha256"]


def names_sha256(names: Sequence[str]) -> str:
    """SHA-256 of class names joined with newlines: how a long vocabulary is recorded in the settings."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


class PriorRecipe(abc.ABC):
    """A way to turn an image and its image-level label into a coarse mask.

    Attributes:
        name: the recipe's registry name (``model.priors.PRIOR_RECIPES``), e.g. ``"gradcam-rn50"``.
        class_names: the benchmark's classes; class index ``c`` means ``class_names[c]``.
    """

    name: ClassVar[str] = ""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = tuple(class_names)
        if not self.class_names:
            raise ValueError("a prior recipe needs at least one class name")

    @property
    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything the maps depend on besides the image, the class and the saved size (weights' SHA-256,
        precision, prompts, ...), JSON-serialisable: what a CAM folder's manifest records."""

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
                cam_size: int = 50) -> list[torch.Tensor]:
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
                 cam_size: int = 50) -> list[torch.Tensor]:
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
