"""Which settings made the CAM files of a folder: ``cam_manifest.json``, so that a folder never mixes CAMs.

The CAM job skips pairs whose file exists (that is how an interrupted job resumes). That is only right when
the existing files were made with the same settings; the manifest records them:

* the CAM recipe's version (:data:`RECIPE`: bumped whenever the computation changes);
* the SHA-256 of the CLIP weights file;
* the precision (``fp32``, ``fp16`` for CLIP's float16 weights, or ``amp`` for the CUDA-autocast trunk);
* CLIP's input size and the saved CAM size;
* the prompt template and the SHA-256 of the class names the softmax runs over.

:func:`claim_folder` is called for every output folder before any CAM is computed: a folder with the same
settings resumes; a folder made with other settings is refused unless ``--overwrite`` (its CAM files are then
deleted first, so old and new never mix, even if the overwrite is interrupted); CAM files without a manifest
(the released scripts, an older version) are refused unless ``--verify-existing`` (keep those that load as
well-formed CAMs) or ``--overwrite``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from common.errors import UserInputError
from common.io import atomic_write_text

logger = logging.getLogger(__name__)

MANIFEST_NAME = "cam_manifest.json"
RECIPE = "clip-rn50-gradcam-released/1"  # bump when the CAM computation changes
CAM_GLOB = "*--*.pt"  # {image}--{class}.pt, in the folder or (COCO) its split subfolders


class CamManifestError(UserInputError):
    """A CAM folder holds CAMs made with other (or unknown) settings."""


@dataclass(frozen=True)
class CamSettings:
    """Everything a CAM file depends on besides its image and class."""

    recipe: str
    clip_weights_sha256: str
    precision: str
    clip_image_size: int
    cam_size: int
    prompt_template: str
    class_names_sha256: str

    @classmethod
    def create(cls, *, clip_weights_sha256: str, precision: str, clip_image_size: int, cam_size: int,
               prompt_template: str, class_names: Sequence[str]) -> "CamSettings":
        """Settings of a job; the class names are recorded by their SHA-256 (joined with newlines)."""
        names_sha = hashlib.sha256("\n".join(class_names).encode()).hexdigest()
        return cls(recipe=RECIPE, clip_weights_sha256=clip_weights_sha256, precision=precision,
                   clip_image_size=int(clip_image_size), cam_size=int(cam_size), prompt_template=prompt_template,
                   class_names_sha256=names_sha)

    def differences(self, stored: dict[str, Any]) -> list[str]:
        """``"precision: 'fp32' -> 'amp'"`` for every setting ``stored`` (a manifest) records differently."""
        return [f"{key}: {stored.get(key)!r} -> {value!r}" for key, value in asdict(self).items()
                if stored.get(key) != value]


def read_manifest(folder: Path) -> Optional[dict[str, Any]]:
    """The folder's manifest (None when absent); an unreadable one is reported naming the file."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CamManifestError(f"cannot read {path} ({exc}); delete it and pass --overwrite to recompute the "
                               "folder's CAMs") from exc
    if not isinstance(stored, dict):
        raise CamManifestError(f"{path} is not a CAM manifest; delete it and pass --overwrite")
    return stored


def write_manifest(folder: Path, settings: CamSettings) -> Path:
    """Write ``folder/cam_manifest.json`` atomically."""
    return atomic_write_text(json.dumps(asdict(settings), indent=2, sort_keys=True) + "\n",
                             Path(folder) / MANIFEST_NAME)


def _has_cams(folder: Path) -> bool:
    return any(True for _ in folder.rglob(CAM_GLOB)) if folder.is_dir() else False


def claim_folder(folder: Path, settings: CamSettings, *, overwrite: bool = False,
                 verify_existing: bool = False) -> None:
    """Make ``folder`` a folder of CAMs made with ``settings`` (see the module docstring), or refuse.

    Raises:
        CamManifestError: other settings (without ``overwrite``), or CAM files of unknown origin (without
            ``overwrite`` or ``verify_existing``); the message names the folder, the differences and the flag.
    """
    folder = Path(folder)
    stored = read_manifest(folder)
    if stored is not None and not settings.differences(stored):
        return
    if not overwrite:
        if stored is not None:
            raise CamManifestError(
                f"{folder} holds CAMs made with other settings ({'; '.join(settings.differences(stored))}); pass "
                "--overwrite to recompute them, or write these CAMs into another folder")
        if _has_cams(folder) and not verify_existing:
            raise CamManifestError(
                f"{folder} holds CAM files without a {MANIFEST_NAME} (made by another tool or version); pass "
                "--verify-existing to check and keep them, or --overwrite to recompute them")
    if overwrite and folder.is_dir():
        (folder / MANIFEST_NAME).unlink(missing_ok=True)  # first, so an interrupted overwrite stays refused
        removed = 0
        for path in folder.rglob(CAM_GLOB):
            path.unlink()
            removed += 1
        logger.info("--overwrite: removed %d CAM files from %s", removed, folder)
    write_manifest(folder, settings)
