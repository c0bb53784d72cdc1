"""train.py / test.py check that the CAM files they read were made from their images, with their benchmark's
class names (the folder's ``cam_manifest.json``, :mod:`engine.cam_manifest`).

For every CAM folder a run reads, once, before the first episode:

* no manifest (the authors' downloaded CAMs, the released scripts' or another tool's): a warning, nothing is
  checked; a format-1 manifest (earlier versions, no image records): the settings are checked, the images are
  not (a warning says how to record them);
* the recipe's class names (``class_names_sha256``) must be the benchmark's, or the run stops: the CAM folder
  of another benchmark would otherwise be read under the same file names;
* every CAM an episode may load must be recorded in the manifest, and its image must still have the recorded
  size and modification time; an image whose modification time alone differs is hashed and accepted when its
  content is the same (a warning counts them: a copy that did not keep the times). Anything else stops the run
  with one line naming the image (or the CAM file) and the command that recomputes the folder.

Cost: one ``stat`` per distinct image the run uses (no image is read unless its modification time changed) and
one JSON parse of the manifest; ``benchmarks/bench_cam_check.py`` measures it.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from data.benchmarks import CLASS_NAMES
from data.cam_files import cam_path
from data.dataset import cam_command
from data.fewshot import FewShotDataset
from engine.cam_job import fss_prompts
from engine.cam_manifest import (MANIFEST_NAME, RECIPE, CamManifest, CamManifestError, class_names_sha256,
                                 file_sha256, manifest_digest, parse_manifest, read_manifest_text)

logger = logging.getLogger(__name__)


@dataclass
class CamFolderCheck:
    """What the check of one CAM folder found: the SHA-256 of its manifest (None without one) and warnings."""

    folder: Path
    manifest_sha256: Optional[str]
    warnings: list[str] = field(default_factory=list)


def expected_class_names(dataset: FewShotDataset) -> Sequence[str]:
    """The class names a CAM job runs the softmax over for ``dataset``'s benchmark (prompt order)."""
    if dataset.benchmark in CLASS_NAMES:
        return CLASS_NAMES[dataset.benchmark]
    return fss_prompts(dataset.split_root)


def _check_settings(manifest: CamManifest, dataset: FewShotDataset, command: str) -> list[str]:
    settings = manifest.settings
    stored = settings.settings.get("class_names_sha256")
    if stored is None:
        if settings.recipe == RECIPE:
            raise CamManifestError(f"{manifest.path} records no class_names_sha256; recompute the folder with: "
                                   f"{command} --overwrite")
        return [f"{manifest.path}: CAMs of the recipe {settings.recipe!r}, which records no class names: not "
                f"checked against {dataset.benchmark}'s classes"]
    expected = class_names_sha256(expected_class_names(dataset))
    if stored != expected:
        raise CamManifestError(
            f"{manifest.path}: its CAMs were made for other class names (class_names_sha256 {stored[:12]}..., "
            f"{dataset.benchmark}'s: {expected[:12]}...), e.g. another benchmark's CAM folder; pass the "
            f"{dataset.benchmark} CAM folder, or make one with: {command}")
    return []


def _check_images(manifest: CamManifest, datasets: Sequence[FewShotDataset], command: str) -> list[str]:
    """Every CAM the datasets may load is recorded, from its image as it is now; returns warnings."""
    classes_by_name: dict[str, set[int]] = defaultdict(set)
    image_of: dict[str, Path] = {}
    for dataset in datasets:
        for name, cls in dataset.needed_cam_pairs():
            classes_by_name[name].add(cls)
            image_of.setdefault(name, dataset.image_path(name))
    rehashed = 0
    for name in sorted(classes_by_name):
        record = manifest.record(name)
        missing = sorted(classes_by_name[name] - (record.classes if record is not None else set()))
        if missing:
            raise CamManifestError(
                f"{cam_path(manifest.folder, name, missing[0])} is not recorded in {manifest.path} (made by a CAM job "
                f"that was killed, or copied in by hand): which image it was made from is unknown; finish the "
                f"folder with: {command}")
        image = image_of[name]
        try:
            stat = os.stat(image)
        except OSError:
            continue  # reading the image reports it, naming the file
        if record.identity.same_stat(stat):
            continue
        same_content = stat.st_size == record.identity.bytes and file_sha256(image) == record.identity.sha256
        if not same_content:
            what = (f"{record.identity.bytes} -> {stat.st_size} bytes" if stat.st_size != record.identity.bytes
                    else "same size, other content")
            raise CamManifestError(f"{image} changed after its CAMs in {manifest.folder} were made ({what}); "
                                   f"recompute them with: {command}")
        rehashed += 1
    if rehashed:
        return [f"{rehashed} images have other modification times than {manifest.path} records but the same "
                f"content (copied without keeping the times?); run {command} to record them, so that they need not "
                "be read at every start"]
    return []


def check_cam_folder(folder: Path, datasets: Sequence[FewShotDataset]) -> CamFolderCheck:
    """Check the CAM folder ``folder`` against the images and class names of ``datasets`` (those that read
    their CAMs from it) as the module docstring says; logs and returns the warnings.

    Raises:
        CamManifestError: the CAMs were made for other class names, or from images that changed since, or are
            not recorded; one line naming the file and the command that recomputes the folder.
    """
    folder = Path(folder)
    command = cam_command(datasets[0])
    text = read_manifest_text(folder)
    if text is None:
        check = CamFolderCheck(folder, None, [
            f"{folder} has no {MANIFEST_NAME} (CAMs from the authors' download, the released scripts or another "
            "tool): which images, classes and settings its CAMs were made from is not checked"])
    else:
        manifest = parse_manifest(folder, text)
        check = CamFolderCheck(folder, hashlib.sha256(text.encode("utf-8")).hexdigest())  # the file's bytes
        for dataset in datasets:
            check.warnings += _check_settings(manifest, dataset, command)
        if manifest.version < 2:
            check.warnings.append(
                f"{manifest.path} was written by an earlier version that did not record the images: the CAMs "
                f"are not checked against them; record them with: {command} --verify-existing")
        else:
            check.warnings += _check_images(manifest, datasets, command)
    check.warnings = list(dict.fromkeys(check.warnings))
    for message in check.warnings:
        logger.warning(message)
    return check


def check_cam_provenance(datasets: Sequence[FewShotDataset]) -> list[CamFolderCheck]:
    """:func:`check_cam_folder` for every CAM folder the datasets read (each folder once)."""
    by_folder: dict[Path, list[FewShotDataset]] = defaultdict(list)
    for dataset in datasets:
        by_folder[Path(dataset.cam_root).resolve()].append(dataset)
    return [check_cam_folder(folder, group) for folder, group in by_folder.items()]


def cam_manifest_digests(args: argparse.Namespace, *, training: bool) -> dict[str, Optional[str]]:
    """``{"traincampath": sha256, "valcampath": sha256}`` (test: valcampath only) of the CAM folders'
    manifests (None where a folder has none), recorded in ``args.json`` and ``results.json``."""
    flags = ("traincampath", "valcampath") if training else ("valcampath",)
    return {flag: manifest_digest(Path(getattr(args, flag))) for flag in flags}
