"""What made the CAM files of a folder: ``cam_manifest.json``, so that a folder never mixes CAMs and a run can
check that its CAMs belong to its images.

The manifest (format 2) records

* ``recipe``: the id of the prior recipe, name and version (:data:`priors.recipes.PRIOR_RECIPE_IDS`:
  ``clip-rn50-gradcam-released/1`` for ``gradcam-rn50``, ``clip-es/1``, ``imported/1``; the version is bumped
  whenever the computation changes), and ``settings``: the recipe's settings, a flat JSON object, with
  ``cam_size`` (the saved maps' side) and ``class_names_sha256`` (the SHA-256 of the benchmark's class names) in
  every one. ``gradcam-rn50``: the SHA-256 of the CLIP weights file, the precision (``fp32``, ``fp16`` for
  CLIP's float16 weights, ``amp`` for the CUDA-autocast trunk), CLIP's input size and the prompt template;
  ``clip-es`` its own (the label mode among them); ``imported`` the import's source, pattern, values and resize
  (:mod:`data.priors`). Readers compare settings as a whole and look only at the keys they know;
* ``images``: per image name (the ``{image}`` part of ``{image}--{class}.pt``: ``2007_000032``,
  ``train2014/COCO_train2014_000000000009.jpg``, ``ab_wheel/1``) the identity of the image file the CAMs were
  made from (``bytes``: its size, ``mtime_ns``: its modification time, ``sha256``: its content) and the
  ``classes`` whose CAM was made from that identity (imported priors: the image they were checked against).

Format 1 (earlier versions of this code) had the Grad-CAM settings at the top level and no ``images``; it is
still read (:func:`parse_manifest`).

:func:`claim_folder` is called for every output folder of a CAM job before any CAM is computed: a folder with
the same recipe and settings resumes; a folder made with other settings is refused unless ``--overwrite`` (its
CAM files are then deleted first, so old and new never mix, even if the overwrite is interrupted); CAM files
without a manifest (the released scripts', another tool's) or with a format-1 manifest (which does not say
which image each CAM came from) are refused unless ``--verify-existing`` (keep those that load as well-formed
CAMs, recording the current identity of their images) or ``--overwrite``. The CAM job then recomputes the
CAMs of images whose identity changed (:mod:`priors.cam_job`), and ``train.py`` / ``test.py`` check the
images they use against the manifest (:mod:`priors.provenance`).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional

from common.errors import UserInputError
from common.io import atomic_write_text, sha256_file

logger = logging.getLogger(__name__)

MANIFEST_NAME = "cam_manifest.json"
FORMAT_VERSION = 2
CAM_GLOB = "*--*.pt"  # {image}--{class}.pt, in the folder or (COCO, FSS-1000) its subfolders
_V1_SETTINGS = ("clip_weights_sha256", "precision", "clip_image_size", "cam_size", "prompt_template",
                "class_names_sha256")


class CamManifestError(UserInputError):
    """A CAM folder holds CAMs made with other (or unknown) settings, or from other images."""


@dataclass(frozen=True)
class CamSettings:
    """Everything a CAM file depends on besides its image and class: the recipe's id and its settings."""

    recipe: str
    settings: Mapping[str, Any]

    def differences(self, other: "CamSettings") -> list[str]:
        """``"precision: 'fp32' -> 'amp'"`` for every setting ``other`` (a folder's) records differently."""
        out = [f"recipe: {other.recipe!r} -> {self.recipe!r}"] if other.recipe != self.recipe else []
        return out + [f"{key}: {other.settings.get(key)!r} -> {self.settings.get(key)!r}"
                      for key in sorted(set(self.settings) | set(other.settings))
                      if other.settings.get(key) != self.settings.get(key)]


class ImageIdentity(NamedTuple):
    """What identifies an image file: its size, modification time and content hash (a tuple: a COCO manifest
    holds ~120k of them)."""

    bytes: int
    mtime_ns: int
    sha256: str

    def same_stat(self, stat: os.stat_result) -> bool:
        """Whether ``stat`` (of the image now) has the recorded size and modification time."""
        return stat.st_size == self.bytes and stat.st_mtime_ns == self.mtime_ns


def image_identity(path: Path) -> ImageIdentity:
    """The identity of the image file ``path`` now (the file is read and hashed)."""
    stat = os.stat(path)
    return ImageIdentity(bytes=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=sha256_file(path))


@dataclass(slots=True)
class ImageRecord:
    """The identity an image had when the CAMs of ``classes`` were made from it."""

    identity: ImageIdentity
    classes: set[int] = field(default_factory=set)

    def as_json(self) -> dict[str, Any]:
        return {"bytes": self.identity.bytes, "mtime_ns": self.identity.mtime_ns, "sha256": self.identity.sha256,
                "classes": sorted(self.classes)}


class CamManifest:
    """A folder's manifest: its settings and, per image name, the identity its CAMs were made from.

    ``images`` is None for a format-1 manifest (no record of the images); a parsed manifest builds it from
    the file's records on first use, and :meth:`record` converts one record without building the others (a
    COCO manifest holds ~120k). ``adopt``: set by :func:`claim_folder` with ``--verify-existing``: the job
    records CAMs found without a record (after loading them) with the current identity of their image instead
    of recomputing them.
    """

    def __init__(self, folder: Path, settings: CamSettings, images: Optional[dict[str, ImageRecord]] = None, *,
                 version: int = FORMAT_VERSION, adopt: bool = False,
                 raw_images: Optional[Mapping[str, Any]] = None) -> None:
        self.folder, self.settings, self.version, self.adopt = Path(folder), settings, version, adopt
        self._images, self._raw = images, raw_images

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_NAME

    @property
    def images(self) -> Optional[dict[str, ImageRecord]]:
        """Image name -> record (None: a format-1 manifest, which records no images)."""
        if self._images is None and self._raw is not None:
            self._images = {name: self._convert(name, raw) for name, raw in self._raw.items()}
            self._raw = None
        return self._images

    @images.setter
    def images(self, images: Optional[dict[str, ImageRecord]]) -> None:
        self._images, self._raw = images, None

    def record(self, name: str) -> Optional[ImageRecord]:
        """The record of image ``name`` (None when it has none)."""
        if self._images is not None:
            return self._images.get(name)
        raw = self._raw.get(name) if self._raw is not None else None
        return None if raw is None else self._convert(name, raw)

    def _convert(self, name: str, raw: Any) -> ImageRecord:
        try:
            identity = ImageIdentity(int(raw["bytes"]), int(raw["mtime_ns"]), str(raw["sha256"]))
            return ImageRecord(identity, {int(c) for c in raw["classes"]})
        except (TypeError, ValueError, KeyError) as exc:
            raise CamManifestError(f"{self.path}: the record of {name!r} is damaged ({type(exc).__name__}: {exc}); "
                                   "delete the file and pass --overwrite to recompute the folder's CAMs") from exc

    def to_json(self) -> str:
        """The manifest file's text: the header indented, one line per image (COCO: ~120k lines)."""
        header = json.dumps({"format_version": FORMAT_VERSION, "recipe": self.settings.recipe,
                             "settings": dict(self.settings.settings)}, indent=2, sort_keys=True)
        records = ",\n".join(f"    {json.dumps(name)}: {json.dumps(record.as_json(), sort_keys=True)}"
                             for name, record in sorted((self.images or {}).items()))
        images = "{\n" + records + "\n  }" if records else "{}"
        return header[:-2] + f',\n  "images": {images}\n}}\n'

    def save(self) -> Path:
        """Write the manifest atomically into its folder."""
        return atomic_write_text(self.to_json(), self.path)


def parse_manifest(folder: Path, text: str) -> CamManifest:
    """A manifest from its file's ``text`` (format 2, or format 1 of earlier versions: ``images`` None).

    Raises:
        CamManifestError: not JSON, or not a CAM manifest; the message names the file.
    """
    path = Path(folder) / MANIFEST_NAME
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise CamManifestError(f"cannot read {path} ({exc}); delete it and pass --overwrite to recompute the "
                               "folder's CAMs") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("recipe"), str):
        raise CamManifestError(f"{path} is not a CAM manifest; delete it and pass --overwrite")
    if "format_version" not in raw:  # format 1: the Grad-CAM settings at the top level
        settings = {key: raw.get(key) for key in _V1_SETTINGS}
        return CamManifest(Path(folder), CamSettings(raw["recipe"], settings), images=None, version=1)
    images, settings = raw.get("images", {}), raw.get("settings", {})
    if not isinstance(images, dict) or not isinstance(settings, dict):
        raise CamManifestError(f"{path} is damaged (its images or settings are not JSON objects); delete it and pass "
                               "--overwrite to recompute the folder's CAMs")
    try:
        version = int(raw["format_version"])
    except (TypeError, ValueError) as exc:
        raise CamManifestError(f"{path} is damaged (format_version {raw['format_version']!r}); delete it and pass "
                               "--overwrite") from exc
    return CamManifest(Path(folder), CamSettings(raw["recipe"], dict(settings)), version=version, raw_images=images)


def read_manifest_text(folder: Path) -> Optional[str]:
    """The text of ``folder``'s manifest, None when it has none; an unreadable file is reported naming it."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CamManifestError(f"cannot read {path} ({exc}); delete it and pass --overwrite to recompute the "
                               "folder's CAMs") from exc


def read_manifest(folder: Path) -> Optional[CamManifest]:
    """``folder``'s manifest (None when absent); an unreadable one is reported naming the file."""
    text = read_manifest_text(folder)
    return None if text is None else parse_manifest(Path(folder), text)


def manifest_digest(folder: Path) -> Optional[str]:
    """SHA-256 of ``folder``'s manifest file (None without one): recorded with a run, it names the CAMs used."""
    path = Path(folder) / MANIFEST_NAME
    return sha256_file(path) if path.is_file() else None


def write_manifest(folder: Path, settings: CamSettings) -> Path:
    """Write a manifest of ``settings`` without image records into ``folder``, atomically."""
    return CamManifest(Path(folder), settings, images={}).save()


def has_cam_files(folder: Path) -> bool:
    """Whether ``folder`` (or a subfolder) holds ``{image}--{class}.pt`` files."""
    return any(True for _ in folder.rglob(CAM_GLOB)) if folder.is_dir() else False


def claim_folder(folder: Path, settings: CamSettings, *, overwrite: bool = False,
                 verify_existing: bool = False) -> CamManifest:
    """Make ``folder`` a folder of CAMs made with ``settings`` (see the module docstring), or refuse; returns
    its manifest (written), which the CAM job updates as it goes.

    Raises:
        CamManifestError: other settings (without ``overwrite``), or CAM files of unknown origin (without
            ``overwrite`` or ``verify_existing``); the message names the folder, the differences and the flag.
    """
    folder = Path(folder)
    stored = read_manifest(folder)
    differences = settings.differences(stored.settings) if stored is not None else []
    if stored is not None and not differences and stored.images is not None:
        stored.adopt = verify_existing
        return stored
    if not overwrite:
        if differences:
            raise CamManifestError(
                f"{folder} holds CAMs made with other settings ({'; '.join(differences)}); "
                "pass --overwrite to recompute them, or write these CAMs into another folder")
        if has_cam_files(folder) and not verify_existing:
            what = ("CAM files made by an earlier version that did not record their images" if stored is not None
                    else f"CAM files without a {MANIFEST_NAME} (made by another tool or version)")
            raise CamManifestError(
                f"{folder} holds {what}; pass --verify-existing to check and keep them (recording their images as "
                "they are now), or --overwrite to recompute them")
    if overwrite and folder.is_dir():
        (folder / MANIFEST_NAME).unlink(missing_ok=True)  # first, so an interrupted overwrite stays refused
        removed = 0
        for path in folder.rglob(CAM_GLOB):
            path.unlink()
            removed += 1
        logger.info("--overwrite: removed %d CAM files from %s", removed, folder)
    manifest = CamManifest(folder, settings, images={}, adopt=verify_existing and not overwrite)
    manifest.save()
    return manifest
