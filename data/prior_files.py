"""One prior made elsewhere (a published pseudo-mask, a CAM saved by another tool): its file name, its values,
its size in the model's layout.

A source folder holds one file per (image, class), named by a pattern (:data:`PATTERN_FIELDS`); a file is an
8-bit PNG (grey or palette indices) or a 2-D ``.npy`` array, whose values (:data:`VALUE_KINDS`) are read as:

* ``0-255``: grey levels, divided by 255;
* ``0-1``: already in [0, 1];
* ``label``: a label map in which the pixels equal to the class id + 1 are the class's (0 background, VOC's
  255 boundary ignored as background): TLG's published pseudo-masks, or a benchmark's own annotation;
* ``auto``: ``0-255`` for 8-bit files, ``0-1`` for boolean and floating-point arrays.

Every bad file is a :class:`PriorFileError` naming it and what to do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from data.errors import DataError, file_errors

__all__ = ["PATTERN_FIELDS", "PriorFileError", "RESIZE_METHODS", "VALUE_KINDS", "prior_file_name", "read_prior",
           "resize_nearest", "resize_prior"]

PATTERN_FIELDS = ("image", "stem", "class", "class1")
VALUE_KINDS = ("auto", "0-255", "0-1", "label")
RESIZE_METHODS = ("area", "bilinear", "nearest")
UINT8_MAX = 255


class PriorFileError(DataError):
    """A prior file is missing, unreadable, of another size than its image, or holds values out of range."""


def prior_file_name(pattern: str, image: str, cls: int) -> str:
    """The file name ``pattern`` gives the prior of image ``image`` (a split-list name) for 0-based class ``cls``.

    Fields: ``{image}`` the name (``2007_000123``, ``train2014/COCO_train2014_000000000009.jpg``, ``abacus/3``),
    ``{stem}`` the name without its extension, ``{class}`` the 0-based and ``{class1}`` the 1-based class id.
    """
    stem = image[: -len(Path(image).suffix)] if Path(image).suffix else image
    return pattern.format(image=image, stem=stem, **{"class": int(cls), "class1": int(cls) + 1})


def _read_array(path: Path) -> np.ndarray:
    """The file's values as a 2-D array (PNG: grey levels or palette indices; ``.npy``: as stored)."""
    with file_errors(path, "prior", PriorFileError):
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            with Image.open(path) as img:
                array = np.array(img)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise PriorFileError(f"prior {path} must be a single-channel 2-D map, got shape {array.shape}")
    return array


def read_prior(path: Path, cls: int, values: str) -> np.ndarray:
    """The prior at ``path`` for 0-based class ``cls`` as an (H, W) float32 map in [0, 1] (see the module
    docstring for ``values``). Raises PriorFileError naming the file."""
    if values not in VALUE_KINDS:
        raise ValueError(f"values must be one of {VALUE_KINDS}, got {values!r}")
    array = _read_array(path)
    if values == "label":
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise PriorFileError(f"prior {path} holds {array.dtype} values, not a label map (--values label reads "
                                 "integer class ids + 1)")
        return (array == cls + 1).astype(np.float32)
    if values == "auto":
        if array.dtype == np.uint8:
            values = "0-255"
        elif array.dtype == bool or np.issubdtype(array.dtype, np.floating):
            values = "0-1"
        else:
            raise PriorFileError(f"prior {path} holds {array.dtype} values; say how to read them with --values "
                                 "0-255, 0-1 or label")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise PriorFileError(f"prior {path} holds NaN or infinite values")
    top = UINT8_MAX if values == "0-255" else 1
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > top:
        hint = " (pass --values 0-255 for grey levels)" if values == "0-1" and high <= UINT8_MAX else ""
        raise PriorFileError(f"prior {path} holds values {low:g}..{high:g}, outside --values {values}{hint}")
    return array / top if top != 1 else array


def resize_nearest(array: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of an (H, W) map to ``size`` (h, w), as the datasets resize label masks
    (``F.interpolate(mode="nearest")``)."""
    return F.interpolate(array[None, None], size=tuple(int(s) for s in size), mode="nearest")[0, 0]


def resize_prior(prior: np.ndarray, cam_size: int, method: str) -> torch.Tensor:
    """An (H, W) float32 map in [0, 1] -> (cam_size, cam_size) float32 tensor.

    ``area``: the mean of the pixels each cell covers (``cv2.INTER_AREA``); ``bilinear``: ``cv2.resize``'s
    bilinear, as the released CAMs are resized; ``nearest``: :func:`resize_nearest` (keeps a binary mask binary).
    """
    if method == "nearest":
        return resize_nearest(torch.from_numpy(np.ascontiguousarray(prior, np.float32)), (cam_size, cam_size))
    if method not in RESIZE_METHODS:
        raise ValueError(f"method must be one of {RESIZE_METHODS}, got {method!r}")
    flag = cv2.INTER_AREA if method == "area" else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(prior, np.float32), (cam_size, cam_size), interpolation=flag)
    return torch.from_numpy(np.clip(out, 0, 1).astype(np.float32))
