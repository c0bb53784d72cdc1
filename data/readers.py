"""Reading one image, label mask or CAM file, with errors that name the file; the image transform."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from common.constants import IGNORE_LABEL, IMAGENET_MEAN, IMAGENET_STD
from common.errors import brief
from common.resize import resize_bilinear
from data.errors import DataError, MissingCAMError, file_errors

__all__ = ["ImageTransform", "read_binary_mask", "read_cam", "read_image", "read_label"]

BINARY_MASK_THRESHOLD = 128  # FSS-1000 (HSNet): grey level >= 128 is the object


def read_image(path: Path) -> Image.Image:
    """The RGB image at ``path`` (fully decoded, so a truncated file fails here, naming itself)."""
    with file_errors(path, "image"), Image.open(path) as img:
        return img.convert("RGB")


def _check_mask_size(array: np.ndarray, path: Path, image_size: tuple[int, int], image_path: Path) -> None:
    if (array.shape[1], array.shape[0]) != tuple(image_size):
        raise DataError(f"mask {path} is {array.shape[1]}x{array.shape[0]} (WxH) but its image {image_path} is "
                        f"{image_size[0]}x{image_size[1]}")


def read_label(path: Path, *, nclass: int, image_size: tuple[int, int], image_path: Path, allow_ignore: bool,
               strict: bool = True, on_outside: Optional[Callable[[Path, list[int]], None]] = None) -> torch.Tensor:
    """The label mask at ``path`` as an (H, W) uint8 tensor (0 background, 1..nclass, 255 if ``allow_ignore``).

    Values outside that range: with ``strict`` an error naming the file and the values; otherwise they are
    read as background (0), which is what the released loaders make of them, and ``on_outside(path, values)``
    is called with every such value. A file that cannot be decoded is an error either way.

    Args:
        image_size: (W, H) of the image it annotates (PIL order); a different mask size is an error.
        image_path: that image, for the error message.
    """
    with file_errors(path, "mask"), Image.open(path) as img:
        array = np.array(img)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise DataError(f"mask {path} must be a single-channel 8-bit PNG, got shape {array.shape} {array.dtype}")
    _check_mask_size(array, path, image_size, image_path)
    bad = array > nclass
    if allow_ignore:
        bad &= array != IGNORE_LABEL
    if bad.any():
        values = np.unique(array[bad]).tolist()
        if strict:
            raise DataError(f"mask {path} holds class index(es) {values[:5]} outside 0..{nclass}"
                            + (" and 255" if allow_ignore else ""))
        array = np.where(bad, 0, array).astype(np.uint8)
        if on_outside is not None:
            on_outside(path, values)
    return torch.from_numpy(array)


def read_binary_mask(path: Path, *, image_size: tuple[int, int], image_path: Path) -> torch.Tensor:
    """The object mask at ``path`` as an (H, W) uint8 0/1 tensor, as HSNet reads FSS-1000 masks: converted to
    grey levels (``convert('L')``, so RGB and palette PNGs work too), 1 where the level is >= 128.

    Args:
        image_size: (W, H) of the image it annotates (PIL order); a different mask size is an error.
        image_path: that image, for the error message.
    """
    with file_errors(path, "mask"), Image.open(path) as img:
        array = np.array(img.convert("L"))
    _check_mask_size(array, path, image_size, image_path)
    return torch.from_numpy((array >= BINARY_MASK_THRESHOLD).astype(np.uint8))


def read_cam(path: Path, size: int) -> torch.Tensor:
    """The CAM prior at ``path`` as a (size, size) float32 tensor.

    Files of another size (e.g. 50x50 CAMs used at ``--img-size`` 320) are resized bilinearly with
    ``align_corners=True``.
    """
    try:
        cam = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise MissingCAMError(f"CAM {path} not found") from exc
    except Exception as exc:  # noqa: BLE001 - any failure to deserialise is a corrupt file
        raise DataError(f"cannot read CAM {path} ({brief(exc)}); delete it and generate it again") from exc
    if not isinstance(cam, torch.Tensor) or cam.dim() != 2:
        shape = tuple(cam.shape) if isinstance(cam, torch.Tensor) else type(cam).__name__
        raise DataError(f"CAM {path} must hold a 2-D tensor, got {shape}")
    cam = cam.float()
    if tuple(cam.shape) != (size, size):
        cam = resize_bilinear(cam[None, None], (size, size))[0, 0]
    return cam


class ImageTransform:
    """PIL RGB image -> normalised (3, S, S) float tensor: bilinear resize on the PIL image (what
    ``torchvision.transforms.Resize`` does for PIL input), ``ToTensor``, ImageNet ``Normalize``; as released."""

    def __init__(self, img_size: int) -> None:
        self.img_size = int(img_size)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = TF.resize(img, [self.img_size, self.img_size], interpolation=InterpolationMode.BILINEAR)
        return TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)
