"""Where a CAM prior lives: the released naming ``{cam_root}/{image_name}--{class_idx}.pt``.

``image_name`` is the PASCAL image id (``2007_000123``) or the COCO split-relative file name
(``train2014/COCO_train2014_000000000009.jpg``, so COCO CAMs sit in ``train2014/`` and ``val2014/``
subfolders); ``class_idx`` is 0-based. CAMs written by the released scripts and by ours are interchangeable.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

__all__ = ["cam_path", "split_cam_path"]


def cam_path(root: Union[str, Path], name: str, cls: int) -> Path:
    """Path of the CAM of image ``name`` for 0-based class ``cls`` under ``root``."""
    return Path(root) / f"{name}--{int(cls)}.pt"


def split_cam_path(root: Union[str, Path], path: Union[str, Path]) -> tuple[str, int]:
    """``(image_name, cls)`` of the CAM file ``path`` under ``root``: the inverse of :func:`cam_path`.

    Raises:
        ValueError: ``path`` is not under ``root`` or not named ``{image_name}--{cls}.pt``.
    """
    relative = Path(path).relative_to(root).as_posix()
    name, sep, tail = relative.rpartition("--")
    if not sep or not name or not tail.endswith(".pt") or not tail[:-3].isdigit():
        raise ValueError(f"{path} is not a CAM file name ({{image}}--{{class}}.pt)")
    return name, int(tail[:-3])
