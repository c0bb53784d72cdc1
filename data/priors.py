"""Priors made elsewhere, imported into the CAM file layout: ``python -m data.priors import ...``.

A researcher with a published pseudo-mask set (TLG's, for instance) or CAMs saved by another tool imports them
once; train.py and test.py then read the output folder like any CAM folder (``--traincampath``/``--valcampath``).

* Which pairs: every (image, class) of the benchmark's split lists (``--split``; all folds), as the CAM scripts
  make them; FSS-1000: every image of the listed classes, for its own class.
* Where each comes from: ``--source``/``--pattern`` (:func:`data.prior_files.prior_file_name`), or a preset
  ``--naming``: ``pairs`` (``{image}--{class}.png``, any values) or ``tlg`` (TLG's published pseudo-masks:
  PASCAL ``PseMask_Train|Val/{image}--{class}.png``, COCO ``{train2014|val2014}/{name}.png``, both label maps in
  which class id + 1 marks the class; its loaders read exactly these names).
* What is written: ``{out}/{image}--{class}.pt``, a float32 (cam_size, cam_size) map in [0, 1]
  (:mod:`data.cam_files`), atomically; a rerun skips the files already there, so an interrupted import resumes.
* Checked: every source file exists (else one line with the count and the first missing ones, and the full list
  in ``{out}/missing_priors.txt``, before anything is written); each file is a single-channel map of its image's
  size (or square: already in the model's layout) with values in the declared range (else one line naming it).
* Recorded: the folder's ``cam_manifest.json`` (:mod:`data.cam_manifest`), as the CAM scripts write it: recipe
  ``imported/1``, the import's settings (:class:`ImportSettings`: benchmark, source, pattern, values, resize,
  size, the benchmark's class names) and, per image, the identity of the image each prior was checked against,
  so that train.py and test.py check an imported folder like a generated one. A folder imported with other
  settings, or holding CAM files of another origin, is refused rather than mixed; a folder imported by an
  earlier version (``prior_import.json``, no manifest) is imported again into the same folder with the same
  settings, and its ``prior_import.json`` replaced by the manifest.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from PIL import Image
from tqdm import tqdm

from common.cli import ArgumentParser, run_cli
from common.flags import add_flags, check_minimums
from common.io import atomic_torch_save, atomic_write_text, names_sha256
from common.paths import DEFAULT_DATAPATH
from data.benchmarks import BENCHMARK_SPECS, BENCHMARKS
from data.cam_files import cam_path
from data.cam_manifest import (MANIFEST_NAME, CamManifest, CamManifestError, CamSettings, ImageIdentity, ImageRecord,
                               has_cam_files, image_identity, read_manifest)
from data.errors import DataError, file_errors
from data.fss import prior_class_names
from data.prior_files import (RESIZE_METHODS, VALUE_KINDS, PriorFileError, prior_file_name, read_prior,
                              resize_prior)
from data.splits import FSS_SPLITS, SPLITS, resolve_split_root

__all__ = ["IMPORTED_RECIPE", "ImportSettings", "ImportSummary", "NAMINGS", "PriorPair", "benchmark_pairs",
           "import_command", "import_priors", "main"]


IMPORTED_RECIPE = "imported/1"  # the recipe id of imported folders (the recipes' ids: priors.recipes)
LEGACY_RECORD_NAME = "prior_import.json"  # the settings, as earlier versions recorded them (no image records)
MISSING_NAME = "missing_priors.txt"
SAVE_EVERY_S = 30.0  # the manifest is rewritten at most this often during an import (and at its end)
# --naming presets: benchmark -> (pattern, values); None: the preset has no files for that benchmark.
NAMINGS: dict[str, dict[str, Optional[tuple[str, str]]]] = {
    "pairs": {b: ("{image}--{class}.png", "auto") for b in BENCHMARKS},
    "tlg": {"pascal": ("{image}--{class}.png", "label"), "coco": ("{stem}.png", "label"), "fss": None},
}


@dataclass(frozen=True)
class PriorPair:
    """One prior to import: image ``name`` (as in the split lists) of class ``cls``, and the image's file."""

    name: str
    cls: int
    image_path: Path


@dataclass(frozen=True)
class ImportSettings:
    """What an imported folder's priors are made from: what the CAM manifest of the folder records.
    ``class_names_sha256``: of the benchmark's class names (:func:`data.fss.prior_class_names`), which
    train.py/test.py check as they check a generated folder's."""

    benchmark: str
    source: str
    pattern: str
    values: str
    resize: str
    cam_size: int
    class_names_sha256: str

    def cam_settings(self) -> CamSettings:
        """The manifest's recipe (``imported/1``) and settings."""
        return CamSettings(IMPORTED_RECIPE, asdict(self))


@dataclass
class ImportSummary:
    """What an import did."""

    total: int = 0
    imported: int = 0
    skipped: int = 0

    def __str__(self) -> str:
        return f"{self.total} priors: {self.imported} imported, {self.skipped} skipped (already there)"


# ----------------------------------------------------------------------------------------------------------
# Pairs
# ----------------------------------------------------------------------------------------------------------
def benchmark_pairs(benchmark: str, datapath: Path, split_root: Path, splits: Iterable[str]) -> list[PriorPair]:
    """Every (image, class) pair of ``splits``' lists (all folds; FSS-1000: every image of the listed classes
    for its own class), each once, in list order: the CAM job's pairs of those splits
    (:meth:`data.benchmarks.BenchmarkSpec.list_cam_pairs`)."""
    spec = BENCHMARK_SPECS[benchmark]
    images = Path(datapath) / spec.image_dir
    pairs: dict[tuple[str, int], PriorPair] = {}
    for split in splits:
        for pair in spec.list_cam_pairs(images, Path(split_root), splits=[split]):
            pairs.setdefault((pair.name, pair.class_id), PriorPair(pair.name, pair.class_id, images / pair.image))
    return list(pairs.values())


# ----------------------------------------------------------------------------------------------------------
# The import
# ----------------------------------------------------------------------------------------------------------
def _legacy_differences(out: Path, settings: ImportSettings) -> list[str]:
    """How ``out/prior_import.json`` (earlier versions' record) differs from ``settings``."""
    record = out / LEGACY_RECORD_NAME
    try:
        stored = json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {record} ({exc}); import into another folder") from exc
    stored = stored if isinstance(stored, dict) else {}
    return [f"{key}: {stored.get(key)!r} -> {value!r}" for key, value in asdict(settings).items()
            if key != "class_names_sha256" and stored.get(key) != value]


def _claim(out: Path, settings: ImportSettings) -> CamManifest:
    """The manifest of ``out`` for an import with ``settings`` (written; resumed when it is one); a folder of
    priors of another origin or other settings is refused."""
    wanted = settings.cam_settings()
    try:
        stored = read_manifest(out)
    except CamManifestError as exc:
        raise DataError(f"--out {out} holds a {MANIFEST_NAME} that cannot be read as a CAM manifest; import into "
                        "another folder") from exc
    if stored is not None and stored.settings.recipe != IMPORTED_RECIPE:
        raise DataError(f"--out {out} holds CAMs made by the recipe {stored.settings.recipe!r} ({MANIFEST_NAME}); "
                        "import into another folder")
    legacy = stored is None and (out / LEGACY_RECORD_NAME).is_file()
    differences = (wanted.differences(stored.settings) if stored is not None
                   else _legacy_differences(out, settings) if legacy else [])
    if differences:
        raise DataError(f"--out {out} holds priors imported with other settings ({'; '.join(differences)}); "
                        "import into another folder, or delete that one first")
    if stored is not None:
        return stored
    if not legacy and has_cam_files(out):
        raise DataError(f"--out {out} holds CAM files of another origin (no {MANIFEST_NAME}); import into another "
                        "folder")
    manifest = CamManifest(out, wanted, images={})
    manifest.save()
    if legacy:  # its settings are in the manifest now; its priors, unrecorded there, are imported again
        (out / LEGACY_RECORD_NAME).unlink()
    return manifest


def _check_present(pairs: Sequence[PriorPair], settings: ImportSettings, out: Path) -> None:
    """Raise naming the missing source files (all of them listed in ``out/missing_priors.txt``)."""
    source = Path(settings.source)
    files = list(dict.fromkeys(source / prior_file_name(settings.pattern, p.name, p.cls) for p in pairs))
    missing = [path for path in files if not path.is_file()]
    if not missing:
        (out / MISSING_NAME).unlink(missing_ok=True)  # a list left by an earlier, failed run
        return
    listing = atomic_write_text("".join(f"{path}\n" for path in missing), out / MISSING_NAME)
    first = ", ".join(str(path) for path in missing[:3])
    raise PriorFileError(f"{len(missing)} of {len(files)} prior files are missing under {source} (first: {first}; "
                         f"all listed in {listing}); check --source and --pattern/--naming, or --split")


def _image_size(path: Path) -> tuple[int, int]:
    """(W, H) of an image, from its header."""
    with file_errors(path, "image"), Image.open(path) as img:
        return img.size


def _imported(manifest: CamManifest, pair: PriorPair, target: Path) -> bool:
    """Whether ``pair``'s prior is there and recorded with its image as it is now (size, modification time)."""
    record = manifest.images.get(pair.name)
    if record is None or pair.cls not in record.classes or not target.is_file():
        return False
    try:
        return record.identity.same_stat(os.stat(pair.image_path))
    except OSError:
        return False


def import_priors(pairs: Sequence[PriorPair], settings: ImportSettings, out: Path, *,
                  progress: bool = True) -> ImportSummary:
    """Import the prior of every pair that the folder's manifest does not record as imported from its image as
    it is now (see the module docstring).

    Raises:
        DataError / PriorFileError: missing, unreadable or mismatched files, or an output folder of another
        origin; the message names the file.
    """
    out = Path(out)
    _check_present(pairs, settings, out)
    manifest = _claim(out, settings)
    summary = ImportSummary(total=len(pairs))
    source = Path(settings.source)
    identities: dict[Path, ImageIdentity] = {}
    last_save = time.monotonic()
    try:
        for pair in tqdm(pairs, unit="prior", desc="import", disable=not progress, dynamic_ncols=True):
            target = cam_path(out, pair.name, pair.cls)
            if _imported(manifest, pair, target):
                summary.skipped += 1
                continue
            path = source / prior_file_name(settings.pattern, pair.name, pair.cls)
            prior = read_prior(path, pair.cls, settings.values)
            height, width = prior.shape
            image_size = _image_size(pair.image_path)
            if (width, height) != image_size and width != height:
                raise PriorFileError(f"prior {path} is {width}x{height} (WxH) but its image {pair.image_path} is "
                                     f"{image_size[0]}x{image_size[1]}; a prior must have its image's size (or be "
                                     "square, already in the model's layout)")
            atomic_torch_save(resize_prior(prior, settings.cam_size, settings.resize), target)
            if pair.image_path not in identities:
                identities[pair.image_path] = image_identity(pair.image_path)
            record = manifest.images.get(pair.name)
            if record is None or record.identity != identities[pair.image_path]:
                manifest.images[pair.name] = record = ImageRecord(identities[pair.image_path])
            record.classes.add(pair.cls)
            summary.imported += 1
            if time.monotonic() - last_save > SAVE_EVERY_S:
                manifest.save()
                last_save = time.monotonic()
    finally:
        manifest.save()  # what was imported stays recorded, also when a bad file stops the import
    return summary


def import_command(settings: Mapping[str, Any], out: Path, datapath: Path, split_root: Path, split: str) -> str:
    """The command (from the repository root) that imports the ``split`` pairs into the folder ``out`` whose
    manifest records ``settings`` (an imported folder's)."""
    args = ["--benchmark", settings.get("benchmark"), "--source", settings.get("source"), "--pattern",
            settings.get("pattern"), "--values", settings.get("values"), "--resize", settings.get("resize"),
            "--cam-size", settings.get("cam_size"), "--split", split, "--out", out, "--datapath", datapath,
            "--splitpath", split_root]
    return "python -m data.priors import " + " ".join(shlex.quote(str(a)) for a in args)


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """Flags of ``python -m data.priors``."""
    parser = ArgumentParser(prog="python -m data.priors", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="import")
    sub = commands.add_parser("import", help="import a folder of priors made elsewhere",
                              description="Import one prior file per (image, class) into the CAM file layout.")
    add_flags(sub, "import", "--benchmark", benchmarks=BENCHMARKS)
    sub.add_argument("--source", required=True, help="folder of the prior files")
    add_flags(sub, "import", "--out")
    sub.add_argument("--naming", choices=tuple(NAMINGS), default="pairs",
                     help="file naming preset: pairs = {image}--{class}.png; tlg = TLG's published pseudo-masks "
                          "(label maps)")
    sub.add_argument("--pattern", default=None,
                     help="file name under --source, overriding --naming; fields {image} {stem} {class} {class1}, "
                          "e.g. '{image}--{class}.npy'")
    sub.add_argument("--values", choices=VALUE_KINDS, default=None,
                     help="how to read the values (default: the naming's: auto for pairs, label for tlg)")
    sub.add_argument("--resize", choices=RESIZE_METHODS, default=None,
                     help="down to --cam-size (default: nearest for label maps, area otherwise)")
    add_flags(sub, "import", "--split", "--datapath", "--splitpath", "--cam-size", "--no-progress")
    return parser


def settings_from_flags(args: argparse.Namespace, parser: argparse.ArgumentParser,
                        split_root: Path) -> ImportSettings:
    """The import's settings from the parsed flags (bad combinations end in ``parser.error``); ``split_root``:
    the split lists (FSS-1000's name its classes)."""
    preset = NAMINGS[args.naming][args.benchmark]
    if preset is None and args.pattern is None:
        parser.error(f"argument --naming: {args.naming} has no {args.benchmark} files; give --pattern")
    pattern, values = preset or ("", "auto")
    pattern, values = args.pattern or pattern, args.values or values
    try:
        prior_file_name(pattern, "a/b.jpg", 0)
    except (KeyError, IndexError, ValueError) as exc:
        parser.error(f"argument --pattern: {pattern!r} is not a pattern of the fields {{image}} {{stem}} {{class}} "
                     f"{{class1}} ({type(exc).__name__}: {exc})")
    check_minimums(parser, args, "import", got=False)
    resize = args.resize or ("nearest" if values == "label" else "area")
    source = Path(args.source).expanduser().resolve()
    if not source.is_dir():
        parser.error(f"argument --source: {source} is not a folder")
    return ImportSettings(benchmark=args.benchmark, source=str(source), pattern=pattern, values=values,
                          resize=resize, cam_size=int(args.cam_size),
                          class_names_sha256=names_sha256(prior_class_names(args.benchmark, split_root)))


def run_import(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m data.priors import ...`` from command-line flags; bad input raises a UserInputError."""
    parser = build_parser()
    args = parser.parse_args(argv)
    split_root = resolve_split_root(args.splitpath)
    settings = settings_from_flags(args, parser, split_root)
    allowed = FSS_SPLITS if args.benchmark == "fss" else SPLITS
    splits = args.split or list(allowed)
    wrong = [s for s in splits if s not in allowed]
    if wrong:
        parser.error(f"argument --split: {args.benchmark} has the split lists {', '.join(allowed)}, not {wrong[0]}")
    datapath = Path(args.datapath).expanduser().resolve() if args.datapath else DEFAULT_DATAPATH
    pairs = benchmark_pairs(args.benchmark, datapath, split_root, splits)
    out = Path(args.out).expanduser().resolve()
    summary = import_priors(pairs, settings, out, progress=args.progress)
    print(f"{summary}, the pairs of the {args.benchmark} {'/'.join(splits)} lists; into {out} "
          f"(settings and images recorded in {out / MANIFEST_NAME})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m data.priors``: 0 done, 2 bad input (one line naming the file or flag)."""
    return run_cli(lambda: run_import(argv), "python -m data.priors")


if __name__ == "__main__":
    sys.exit(main())
