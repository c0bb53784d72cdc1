"""train.py / test.py check that the CAM files they read were made from their images, with their benchmark's
class names (the folder's ``cam_manifest.json``, :mod:`data.cam_manifest`).

For every CAM folder a run reads, once, before the first episode, whatever made it (a CAM script's recipe,
``gradcam-rn50`` or ``clip-es``, or ``python -m data.priors import``: all write the same manifest):

* no manifest (the authors' downloaded CAMs, the released scripts' or another tool's): a warning, nothing is
  checked; a format-1 manifest (earlier versions, no image records): the settings are checked, the images are
  not (a warning says how to record them);
* the recipe's class names (``class_names_sha256``) must be the benchmark's, or the run stops: the CAM folder
  of another benchmark would otherwise be read under the same file names;
* every CAM an episode may load must be recorded in the manifest, and its image must still have the recorded
  size and modification time; an image whose modification time alone differs is hashed and accepted when its
  content is the same (a warning counts them: a copy that did not keep the times). Anything else stops the run
  with one line naming the image (or the CAM file) and the command that recomputes the folder (the CAM script
  with the folder's recipe flags, or the import that made it).

Cost: one ``stat`` per distinct image the run uses (no image is read unless its modification time changed) and
one JSON parse of the manifest; ``benchmarks/bench_cam_check.py`` measures it.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shlex
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from common.io import names_sha256, sha256_file
from data.cam_files import cam_path
from data.cam_manifest import (MANIFEST_NAME, CamManifest, CamManifestError, manifest_digest,
                               parse_manifest, read_manifest, read_manifest_text)
from data.benchmarks import BENCHMARK_SPECS, CAM_SCRIPTS
from data.fewshot import FewShotDataset
from data.fss import prior_class_names
from data.errors import MissingCAMError
from data.priors import IMPORTED_RECIPE, LEGACY_RECORD_NAME, import_command
from priors.recipes import DEFAULT_PRIOR, PRIOR_RECIPE_IDS, RECIPES, recipe_name

logger = logging.getLogger(__name__)


def cam_command(dataset: FewShotDataset, manifest: Optional[CamManifest] = None) -> str:
    """The command (from the repository root) that makes the CAM files ``dataset`` reads: the CAM script, with
    the recipe's flags when the folder's ``manifest`` names another one than the default; for a folder of
    imported priors, the import that made it (:func:`data.priors.import_command`)."""
    recipe = manifest.settings.recipe if manifest is not None else PRIOR_RECIPE_IDS[DEFAULT_PRIOR]
    if recipe == IMPORTED_RECIPE:
        assert manifest is not None
        split = dataset.split_name if dataset.benchmark == "fss" else dataset.split
        return import_command(manifest.settings.settings, dataset.cam_root, dataset.datapath, dataset.split_root,
                              split)
    args = ["--datapath", str(dataset.datapath)]
    if BENCHMARK_SPECS[dataset.benchmark].one_cam_folder:
        args += ["--campath", str(dataset.cam_root)]
    else:
        args += ["--traincampath", str(dataset.cam_train_path), "--valcampath", str(dataset.cam_val_path)]
    args += ["--splitpath", str(dataset.split_root)]
    name = recipe_name(recipe) or DEFAULT_PRIOR
    if name != DEFAULT_PRIOR and manifest is not None:
        args += ["--prior", name, *RECIPES[name].command_flags(manifest.settings.settings)]
    return f"python {CAM_SCRIPTS[dataset.benchmark]} " + " ".join(shlex.quote(a) for a in args)


def check_cams_exist(dataset: FewShotDataset) -> None:
    """Raise :class:`MissingCAMError` unless every CAM ``dataset`` can load is on disk.

    Validation/test: the images of its episode list; training: every (image, class) of the split. Each CAM
    folder is listed once (no per-file ``stat``), so this takes about a second for all of COCO.
    """
    root = dataset.cam_root
    by_dir: dict[Path, list[Path]] = defaultdict(list)
    for name, cls in dataset.needed_cam_pairs():
        path = cam_path(root, name, cls)
        by_dir[path.parent].append(path)
    missing: list[Path] = []
    for folder, paths in by_dir.items():
        try:
            present = set(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            present = set()
        missing += [p for p in paths if p.name not in present]
    if missing:
        missing.sort()
        try:
            manifest = read_manifest(root)  # which recipe (or import) made the folder
        except CamManifestError:
            manifest = None
        verb = "import" if manifest is not None and manifest.settings.recipe == IMPORTED_RECIPE else "generate"
        total = sum(map(len, by_dir.values()))
        raise MissingCAMError(
            f"{len(missing)} of {total} CAM priors needed by {dataset.benchmark} {dataset.split_name}"
            f"{f' fold {dataset.fold}' if dataset.has_folds else ''} are missing under {root} (first: {missing[0]});\n"
            f"{verb} them (from the repository root) with: {cam_command(dataset, manifest)}")


@dataclass
class CamFolderCheck:
    """What the check of one CAM folder found: the SHA-256 of its manifest (None without one) and warnings."""

    folder: Path
    manifest_sha256: Optional[str]
    warnings: list[str] = field(default_factory=list)


def _check_settings(manifest: CamManifest, dataset: FewShotDataset, command: str) -> list[str]:
    settings = manifest.settings
    stored = settings.settings.get("class_names_sha256")
    if stored is None:
        if settings.recipe in PRIOR_RECIPE_IDS.values():
            raise CamManifestError(f"{manifest.path} records no class_names_sha256; recompute the folder with: "
                                   f"{command} --overwrite")
        return [f"{manifest.path}: CAMs of the recipe {settings.recipe!r}, which records no class names: not "
                f"checked against {dataset.benchmark}'s classes"]
    expected = names_sha256(prior_class_names(dataset.benchmark, dataset.split_root))  # the CAM job's prompts
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
        same_content = stat.st_size == record.identity.bytes and sha256_file(image) == record.identity.sha256
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
    text = read_manifest_text(folder)
    if text is None and (folder / LEGACY_RECORD_NAME).is_file():
        check = CamFolderCheck(folder, None, [
            f"{folder} holds priors imported by an earlier version ({LEGACY_RECORD_NAME}, no {MANIFEST_NAME}): "
            "which images they were checked against is not checked; run the same `python -m data.priors import` "
            "command again to record them"])
    elif text is None:
        check = CamFolderCheck(folder, None, [
            f"{folder} has no {MANIFEST_NAME} (CAMs from the authors' download, the released scripts or another "
            "tool): which images, classes and settings its CAMs were made from is not checked"])
    else:
        manifest = parse_manifest(folder, text)
        command = cam_command(datasets[0], manifest)
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
