"""Where a CAM prior lives: the released naming ``{cam_root}/{image_name}--{class_idx}.pt``.

``image_name`` is the PASCAL image id (``2007_000123``) or the COCO split-relative file name
(``train2014/COCO_train2014_000000000009.jpg``, so COCO CAMs sit in ``train2014/`` and ``val2014/``
subfolders); ``class_idx`` is 0-based. CAMs written by the released scripts and by ours are interchangeable.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

__all__ = ["cam_path"]


def cam_path(root: Union[str, Path], name: str, cls: int) -> Path:
    """Path of the CAM of image ``name`` for 0-based class ``cls`` under ``root``."""
    return Path(root) / f"{name}--{int(cls)}.pt"
