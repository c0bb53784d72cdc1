"""The CAM job: every (image, class) pair of a benchmark's split lists -> one ``{name}--{class}.pt`` prior.

Which pairs (the released scripts' sets, each pair once):

* PASCAL-5i: the training CAM folder gets the pairs of ``trn/fold{0..3}.txt`` (the released script builds the
  four training datasets, each reading the *other* three folds' lists, so it computes every training pair
  three times; here once), the validation folder the pairs of ``val/fold{0..3}.txt``.
* COCO-20i: one folder with ``train2014/`` and ``val2014/`` subfolders; the pairs of every class's list in the
  ``trn`` and ``val`` pickles (image names already carry the ``train2014/`` or ``val2014/`` prefix).
* FSS-1000 (no released script; the released recipe carried over): one folder with a subfolder per class; every
  image of every class of the ``trn``, ``val`` and ``test`` lists, for its own class. The prompts are all 1000
  class names in class-id order (sorted trn, sorted val, sorted test list), underscores read as spaces
  (``ab_wheel`` -> "a photo of a ab wheel"), so the softmax runs over all 1000 as the released scripts run it
  over all 20 or 80.

Which recipe (``--prior``, :mod:`priors.recipes`): ``gradcam-rn50``, the released CLIP RN50 Grad-CAM (default), or
``clip-es``, CLIP-ES's refined CAMs (CLIP ViT-B/16; ``--clip-es-labels``: the softmax over all of the benchmark's
classes, or over the image's own label list, all the classes the split lists give it).

How: each output folder's ``cam_manifest.json`` must record the job's recipe and settings (:mod:`data.cam_manifest`:
CLIP weights, precision, sizes, the recipe's own) and records the identity (size, modification time, SHA-256) of the
image each CAM was made from, so that a pair is skipped when its file is already there *and* was made from the image
as it is now (every file is written atomically, so a present file is complete; ``verify_existing`` also loads each
one, for folders written by other tools); the CAMs of an image that changed (another size or content; a new
modification time alone only refreshes the record) are recomputed. The remaining pairs are grouped by image;
parallel DataLoader workers decode and preprocess the images (the recipe's ``preprocess``); the recipe computes one
batch of images at a time, all of an image's pairs together (``gradcam-rn50``: one trunk forward, one head
forward/backward for all the batch's pairs); an unreadable image is logged with its path, its pairs are counted as
failed and the job goes on. The manifests are rewritten as CAMs are written (at most a tenth of the job's time goes
to it; a killed job recomputes the CAMs written since the last rewrite), and at the end.
``generate_cam_voc.py`` / ``generate_cam_coco.py`` / ``generate_cam_fss.py`` call :func:`main`.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import logging
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from common.cli import ArgumentParser, run_cli
from common.console import ensure_console_logging
from common.constants import CAM_SIZE
from common.device import configure_tf32, resolve_device
from common.flags import add_flags, check_minimums
from common.errors import UserInputError
from common.io import atomic_torch_save, prepare_output_folder, remove_if_empty, sha256_file
from common.paths import DEFAULT_DATAPATH
from common.progress import Progress
from common.workers import check_worker_tempdir
from data.benchmarks import BENCHMARK_SPECS, BENCHMARKS, CAM_SCRIPTS
from data.cam_files import cam_path, split_cam_path
from data.cam_manifest import CamManifest, CamSettings, ImageIdentity, ImageRecord, claim_folder, image_identity
from data.splits import resolve_split_root
from priors.clip_weights import CLIP_PRECISION_CHOICES, random_clip_seed
from priors.recipes import DEFAULT_PRIOR, RECIPES, PriorRecipe, build_prior

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CamPair:
    """One CAM to compute: ``image_path``'s prior for the class at position ``class_idx`` of the job's prompt
    list, saved to ``out_path``. The position is the 0-based class id, except on an FSS-1000 list with fewer
    classes than HSNet's (the synthetic one), where the ids have gaps between the splits."""

    image_path: Path
    class_idx: int
    out_path: Path


@dataclass
class CamJobSummary:
    """What a run did. ``failed``: (image path, error) per unreadable image (its pairs are not written);
    ``replaced``: computed pairs whose file was there but was not made from the image as it is now (the
    image changed, or the file is not recorded in the folder's manifest)."""

    total: int = 0
    computed: int = 0
    skipped: int = 0
    failed_pairs: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    replaced: int = 0

    def __str__(self) -> str:
        rate = self.computed / self.seconds if self.seconds > 0 else float("nan")
        replaced = f" ({self.replaced} replacing stale files)" if self.replaced else ""
        return (f"{self.total} pairs: {self.computed} computed{replaced}, {self.skipped} skipped (already there), "
                f"{self.failed_pairs} failed ({len(self.failed)} unreadable images) in {self.seconds:.1f}s "
                f"({rate:.2f} pairs/s)")


# ----------------------------------------------------------------------------------------------------------
# Pairs
# ----------------------------------------------------------------------------------------------------------
def _unique(pairs: Iterable[CamPair]) -> list[CamPair]:
    """Drop pairs whose output file is already listed (first occurrence kept, order preserved)."""
    first: dict[Path, CamPair] = {}
    for pair in pairs:
        first.setdefault(pair.out_path, pair)
    return list(first.values())


def benchmark_pairs(benchmark: str, imgpath: Path, split_root: Path, folders: Sequence[Path]) -> list[CamPair]:
    """The pairs of ``benchmark``'s CAM job (:meth:`data.benchmarks.BenchmarkSpec.list_cam_pairs`), each once:
    images under ``imgpath``, CAM files into ``folders`` (training, validation; one folder for a benchmark whose
    splits share one)."""
    imgpath = Path(imgpath)
    return _unique(CamPair(imgpath / pair.image, int(pair.prompt), cam_path(Path(folders[pair.folder]), pair.name,
                                                                            pair.class_id))
                   for pair in BENCHMARK_SPECS[benchmark].list_cam_pairs(imgpath, Path(split_root)))


def pascal_pairs(imgpath: Path, split_root: Path, train_cam_root: Path, val_cam_root: Path) -> list[CamPair]:
    """PASCAL-5i pairs: training lists -> ``train_cam_root``, validation lists -> ``val_cam_root``, deduplicated."""
    return benchmark_pairs("pascal", imgpath, split_root, [train_cam_root, val_cam_root])


def coco_pairs(imgpath: Path, split_root: Path, cam_root: Path) -> list[CamPair]:
    """COCO-20i pairs of the trn and val pickles, all into ``cam_root`` (names keep their split subfolder)."""
    return benchmark_pairs("coco", imgpath, split_root, [cam_root])


# ----------------------------------------------------------------------------------------------------------
# Resume
# ----------------------------------------------------------------------------------------------------------
def is_complete(path: Path, *, verify: bool = False, cam_size: Optional[int] = None) -> bool:
    """Whether ``path`` holds a finished CAM. Our files are written atomically, so presence suffices;
    ``verify`` loads the file and checks it is a float32 (cam_size, cam_size) tensor."""
    try:
        if path.stat().st_size == 0:
            return False
    except FileNotFoundError:
        return False
    if not verify:
        return True
    try:
        cam = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 -- a truncated or foreign file: recompute it
        return False
    return isinstance(cam, torch.Tensor) and cam.dtype == torch.float32 and cam.dim() == 2 and \
        (not cam_size or tuple(cam.shape) == (cam_size, cam_size))


# ----------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Item:
    index: int                        # into the job's image groups
    image: Any                        # the recipe's preprocessed input, None when unreadable
    error: Optional[str]
    identity: Optional[ImageIdentity] = None  # of the bytes decoded


class _ImageGroups(Dataset):
    """Decodes and preprocesses each distinct image once (in DataLoader workers), with the identity of the
    bytes it decoded; errors are returned."""

    def __init__(self, paths: Sequence[Path], preprocess: Callable[[Image.Image], Any]) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> _Item:
        try:
            with open(self.paths[index], "rb") as handle:
                data, stat = handle.read(), os.fstat(handle.fileno())
            identity = ImageIdentity(stat.st_size, stat.st_mtime_ns, hashlib.sha256(data).hexdigest())
            with Image.open(io.BytesIO(data)) as img:
                return _Item(index, self.preprocess(img), None, identity)
        except Exception as exc:  # noqa: BLE001 -- missing, truncated, not an image ...: report and go on
            return _Item(index, None, f"{type(exc).__name__}: {exc}")


# ----------------------------------------------------------------------------------------------------------
# Provenance: which pairs are done, what their images were
# ----------------------------------------------------------------------------------------------------------
class _Ledger:
    """The manifests of a job's folders: which CAM files were made from their image as it is now, and the
    records of the CAMs the job writes (saved at most every tenth of the job's time, and at the end)."""

    def __init__(self, manifests: Mapping[Path, CamManifest]) -> None:
        self.manifests = {Path(folder): manifest for folder, manifest in manifests.items()}
        for manifest in self.manifests.values():
            if manifest.images is None:
                manifest.images = {}
        # deepest folder first, so that a folder inside another one gets its own pairs
        self._folders = sorted(self.manifests, key=lambda f: len(f.parts), reverse=True)
        self._folder_of: dict[Path, Path] = {}
        self._state: dict[tuple[Path, str], str] = {}
        self._hashes: dict[Path, ImageIdentity] = {}
        self.dirty: set[Path] = set()
        self._last_save, self._save_cost = time.monotonic(), 0.0

    def locate(self, pair: CamPair) -> tuple[CamManifest, str, int]:
        """The manifest of ``pair``'s folder and its (image name, class) in that folder."""
        parent = pair.out_path.parent
        folder = self._folder_of.get(parent)
        if folder is None:
            folder = next((f for f in self._folders if parent == f or f in parent.parents), None)
            if folder is None:
                raise ValueError(f"{pair.out_path} is in none of the job's folders {sorted(map(str, self._folders))}")
            self._folder_of[parent] = folder
        name, cls = split_cam_path(folder, pair.out_path)
        return self.manifests[folder], name, cls

    def identity(self, image: Path) -> ImageIdentity:
        """The image's identity now (hashed once per job)."""
        if image not in self._hashes:
            self._hashes[image] = image_identity(image)
        return self._hashes[image]

    def image_state(self, manifest: CamManifest, name: str, image: Path) -> str:
        """``"same"`` (the image is as recorded; a new modification time alone refreshes the record),
        ``"changed"``, ``"unrecorded"`` or ``"missing"`` (cannot be read: the job reports it)."""
        key = (manifest.folder, name)
        if key not in self._state:
            record = manifest.images.get(name)
            try:
                stat = os.stat(image)
            except OSError:
                state = "missing"
            else:
                if record is None:
                    state = "unrecorded"
                elif record.identity.same_stat(stat):
                    state = "same"
                elif stat.st_size == record.identity.bytes and sha256_file(image) == record.identity.sha256:
                    record.identity = ImageIdentity(stat.st_size, stat.st_mtime_ns, record.identity.sha256)
                    self.dirty.add(manifest.folder)
                    state = "same"
                else:
                    state = "changed"
            self._state[key] = state
        return self._state[key]

    def record(self, manifest: CamManifest, name: str, cls: int, identity: ImageIdentity) -> None:
        """The CAM of (``name``, ``cls``) was made from an image with ``identity``; an image record of another
        identity is replaced (its other classes' CAMs were made from the old image)."""
        record = manifest.images.get(name)
        if record is None or record.identity != identity:
            manifest.images[name] = record = ImageRecord(identity)
        record.classes.add(int(cls))
        self.dirty.add(manifest.folder)

    def save(self, *, force: bool = False) -> None:
        """Write the changed manifests: with ``force``, or when the last save took under a tenth of the time
        since (so that rewriting a large manifest takes at most a tenth of the job)."""
        now = time.monotonic()
        if not self.dirty or (not force and now - self._last_save < 10 * self._save_cost):
            return
        for folder in sorted(self.dirty):
            self.manifests[folder].save()
        self.dirty.clear()
        self._last_save = time.monotonic()
        self._save_cost = self._last_save - now


def _pending_pairs(pairs: Sequence[CamPair], ledger: Optional[_Ledger], *, verify: bool,
                   cam_size: int) -> tuple[list[CamPair], int]:
    """The pairs to compute, and how many of them replace a file that is there (made from another image, or
    not recorded). Without a ledger (no manifests), a complete file is a finished pair."""
    if ledger is None:
        return [p for p in pairs if not is_complete(p.out_path, verify=verify, cam_size=cam_size)], 0
    pending, unrecorded, changed, adopted = [], 0, defaultdict(int), 0
    for pair in pairs:
        manifest, name, cls = ledger.locate(pair)
        complete = is_complete(pair.out_path, verify=verify, cam_size=cam_size)
        state = ledger.image_state(manifest, name, pair.image_path)
        if complete and state == "same" and cls in manifest.images[name].classes:
            continue
        if complete and manifest.adopt and state in ("same", "unrecorded"):
            ledger.record(manifest, name, cls, ledger.identity(pair.image_path))  # checked by --verify-existing
            adopted += 1
            continue
        pending.append(pair)
        if complete and state == "changed":
            changed[pair.image_path] += 1
        elif complete:
            unrecorded += 1
    if adopted:
        logger.info("--verify-existing: kept %d CAM files and recorded their images as they are now", adopted)
    if changed:
        logger.info("recomputing %d CAM files whose image changed since they were made (%d images)",
                    sum(changed.values()), len(changed))
    if unrecorded:
        logger.info("recomputing %d CAM files not recorded in their folder's manifest (written by a killed job, or "
                    "copied in)", unrecorded)
    return pending, sum(changed.values()) + unrecorded


# ----------------------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------------------
def image_labels(pairs: Sequence[CamPair]) -> dict[Path, list[int]]:
    """Per image, every class the job's pairs give it (sorted prompt positions): its label list."""
    labels: dict[Path, set[int]] = defaultdict(set)
    for pair in pairs:
        labels[pair.image_path].add(pair.class_idx)
    return {path: sorted(classes) for path, classes in labels.items()}


def run_cam_job(pairs: Sequence[CamPair], recipe: PriorRecipe, *, bsz: int = 32, nworker: int = 2,
                cam_size: int = CAM_SIZE, verify_existing: bool = False, progress: bool = True,
                manifests: Optional[Mapping[Path, CamManifest]] = None) -> CamJobSummary:
    """Compute and write the CAM of every pair whose file is missing (with ``manifests``: or not made from its
    image as it is now).

    Args:
        pairs: from :func:`benchmark_pairs` (any list of :class:`CamPair`).
        recipe: the prior recipe (:func:`priors.recipes.build_prior`) over the job's prompt list; a recipe that
            reads an image's labels (:attr:`~priors.recipes.PriorRecipe.reads_image_labels`) gets every class
            ``pairs`` give the image, also those whose file is done.
        bsz: images per forward pass (an image's pairs all go into the same pass).
        nworker: DataLoader worker processes decoding images (0: in this process).
        cam_size: side of the saved maps.
        verify_existing: load existing files instead of trusting their presence.
        progress: report progress (pairs, with ETA: a bar on a terminal, a line every 30 s otherwise,
            :mod:`common.progress`).
        manifests: folder -> its claimed manifest (:func:`data.cam_manifest.claim_folder`), one for every
            folder a pair writes into; the job skips only pairs recorded there with their image unchanged, and
            records what it writes. None: a complete file counts as done (no provenance).
    Returns: a :class:`CamJobSummary`; the caller decides what failures mean (the CLI exits non-zero).
    """
    if bsz < 1:
        raise ValueError(f"bsz must be >= 1, got {bsz}")
    start = time.perf_counter()
    summary = CamJobSummary(total=len(pairs))
    ledger = _Ledger(manifests) if manifests is not None else None
    pending, summary.replaced = _pending_pairs(pairs, ledger, verify=verify_existing, cam_size=cam_size)
    summary.skipped = len(pairs) - len(pending)
    labels = image_labels(pairs) if recipe.reads_image_labels else None

    groups: dict[Path, list[CamPair]] = {}
    for pair in pending:
        groups.setdefault(pair.image_path, []).append(pair)
    paths = list(groups)
    for folder in {p.out_path.parent for p in pending}:
        folder.mkdir(parents=True, exist_ok=True)
    check_worker_tempdir(nworker if paths else 0)
    loader = DataLoader(_ImageGroups(paths, recipe.preprocess), batch_size=bsz, shuffle=False,
                        num_workers=nworker, collate_fn=list,
                        pin_memory=recipe.device.type == "cuda", persistent_workers=False)
    bar = Progress(len(pending), "CAM", unit="pairs", enabled=progress and bool(pending), leave=True)
    try:
        for items in loader:
            for item in (item for item in items if item.error is not None):
                path, npairs = paths[item.index], len(groups[paths[item.index]])
                logger.error("cannot read %s (%s); skipping its %d pair(s)", path, item.error, npairs)
                summary.failed.append((str(path), item.error))
                summary.failed_pairs += npairs
                bar.update(npairs)
            good = [item for item in items if item.error is None]
            if not good:
                continue
            image_pairs = [groups[paths[item.index]] for item in good]
            # one row per pair (the released recipe's batch), or the image's whole label list
            class_lists = [labels[mine[0].image_path] if labels else [p.class_idx for p in mine]
                           for mine in image_pairs]
            maps = recipe.compute([item.image for item in good], class_lists, cam_size)  # per image (P, s, s)
            written = []
            for item, mine, classes, image_maps in zip(good, image_pairs, class_lists, maps):
                for row, pair in enumerate(mine):
                    cam_map = image_maps[classes.index(pair.class_idx) if labels else row]
                    atomic_torch_save(cam_map.clone(), pair.out_path)  # clone: save this map, not the batch
                    written.append((pair, item.identity))
            if ledger is not None:
                for pair, identity in written:
                    manifest, name, cls = ledger.locate(pair)
                    ledger.record(manifest, name, cls, identity)
                ledger.save()
            summary.computed += len(written)
            bar.update(len(written))
    finally:
        bar.close()
        if ledger is not None:
            ledger.save(force=True)
        summary.seconds = time.perf_counter() - start
    return summary


# ----------------------------------------------------------------------------------------------------------
# Command line (generate_cam_voc.py / generate_cam_coco.py / generate_cam_fss.py)
# ----------------------------------------------------------------------------------------------------------
def build_parser(benchmark: str) -> argparse.ArgumentParser:
    """Flags of ``generate_cam_voc.py`` (``"pascal"``), ``generate_cam_coco.py`` (``"coco"``) or
    ``generate_cam_fss.py`` (``"fss"``)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    spec = BENCHMARK_SPECS[benchmark]
    texts = {"description": f"CAM priors for every (image, class) pair of {spec.title}",
             "imgpath": "images",
             "campath": "output folder", **spec.cam_job_help}
    parser = ArgumentParser(description=texts["description"])
    add_flags(parser, "cam", "--datapath")
    parser.add_argument("--imgpath", type=str, default=None,
                        help=f"{texts['imgpath']} (default: <datapath>/{spec.image_dir})")
    if not spec.one_cam_folder:
        add_flags(parser, "cam", "--traincampath", "--valcampath")
    else:
        parser.add_argument("--campath", type=str, default=None,
                            help=f"{texts['campath']} (default: <datapath>/{spec.cam_dirs[0]})")
    add_flags(parser, "cam", "--splitpath")
    parser.add_argument("--prior", choices=tuple(RECIPES), default=DEFAULT_PRIOR,
                        help=f"the prior recipe: {'; '.join(spec.summary for spec in RECIPES.values())} "
                             "(docs/priors.md)")
    for recipe_spec in RECIPES.values():
        for flag in recipe_spec.flags:
            parser.add_argument(*flag.names, **flag.options)
    add_flags(parser, "cam", "--clip-weights", "--device", "--bsz", "--nworker", "--cam-size", "--precision",
              "--tf32", precisions=CLIP_PRECISION_CHOICES)
    parser.add_argument("--verify-existing", dest="verify_existing", action="store_true",
                        help="load existing CAM files (e.g. written by other tools) and recompute broken ones; a "
                             "folder's cam_manifest.json must match the settings")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute every CAM of folders made with other settings (their CAM files are deleted)")
    add_flags(parser, "cam", "--no-progress")
    return parser


def _resolve(value: Optional[str], default: Path) -> Path:
    return Path(value).expanduser().resolve() if value else default


def main(benchmark: str, argv: Optional[Sequence[str]] = None) -> int:
    """``generate_cam_voc.py`` (``"pascal"``) / ``generate_cam_coco.py`` (``"coco"``) / ``generate_cam_fss.py``
    (``"fss"``): run the CAM job from command-line flags; returns the exit status (0 success, 1 some images
    unreadable, 2 bad input)."""
    return run_cli(lambda: run_from_flags(benchmark, argv), CAM_SCRIPTS.get(benchmark, "generate_cam"))


def run_from_flags(benchmark: str, argv: Optional[Sequence[str]] = None) -> int:
    """The CAM job of ``benchmark`` from command-line flags; bad input raises a UserInputError."""
    from priors.recipes.clip_gradcam import resolve_clip_precision

    parser = build_parser(benchmark)
    args = parser.parse_args(argv)
    ensure_console_logging()
    check_minimums(parser, args, "cam", got=False)  # --bsz --cam-size --nworker
    datapath = _resolve(args.datapath, DEFAULT_DATAPATH)
    spec = BENCHMARK_SPECS[benchmark]
    imgpath = _resolve(args.imgpath, datapath / spec.image_dir)
    if not imgpath.is_dir():
        parser.error(f"argument --imgpath: {imgpath} is not a folder (set --imgpath or --datapath)")
    for recipe_spec in RECIPES.values():  # a recipe's own flags, given with another recipe
        for flag in recipe_spec.flags:
            dest = flag.options.get("dest", flag.names[0].lstrip("-").replace("-", "_"))
            if recipe_spec.name != args.prior and getattr(args, dest) != parser.get_default(dest):
                parser.error(f"argument {flag.names[0]}: only with --prior {recipe_spec.name}{flag.note}")
    if args.amp and args.precision == "fp16":
        parser.error("argument --amp: not with --precision fp16 (the whole model already computes in float16)")
    device = resolve_device(args.device)
    # --amp autocasts a float32 model; otherwise "auto" is float16 on CUDA (the authors' CAMs), float32 on a CPU
    args.precision = resolve_clip_precision("fp32" if args.amp and args.precision == "auto" else args.precision,
                                            device)
    logger.info("CLIP precision: %s%s on %s", args.precision, " weights under autocast (--amp)" if args.amp else "",
                device)
    configure_tf32(args.tf32)
    split_root = resolve_split_root(args.splitpath)
    # the output folders: --traincampath/--valcampath, or --campath where the splits share one
    flags = ("--campath",) if spec.one_cam_folder else ("--traincampath", "--valcampath")
    job_folders = [_resolve(getattr(args, flag[2:]), datapath / name) for flag, name in zip(flags, spec.cam_dirs)]
    pairs = benchmark_pairs(benchmark, imgpath, split_root, job_folders)
    class_names = spec.prompt_names(split_root)  # the prompts, in class_idx order
    logger.info("%d distinct (image, class) pairs from the %s split lists in %s", len(pairs), benchmark, split_root)
    folders = dict.fromkeys(job_folders)  # (PASCAL's two folders may be one)
    created = [folder for folder, flag in zip(folders, flags) if prepare_output_folder(folder, flag)]
    try:
        # --clip-weights random is recorded as such in the manifest, never as a file's hash
        recipe = build_prior(args.prior, class_names, weights=args.clip_weights, device=device,
                             precision=args.precision, **RECIPES[args.prior].options(args, benchmark))
        settings = CamSettings(recipe.version, {**recipe.settings, "cam_size": int(args.cam_size)})
        manifests = {folder: claim_folder(folder, settings, overwrite=args.overwrite,
                                          verify_existing=args.verify_existing) for folder in folders}
    except UserInputError:
        for folder in created:  # made for this job, which never started
            remove_if_empty(folder)
        raise
    logger.info("prior recipe %s (%s)", args.prior, recipe.version)
    summary = run_cam_job(pairs, recipe, bsz=args.bsz, nworker=args.nworker, cam_size=args.cam_size,
                          verify_existing=args.verify_existing, progress=args.progress, manifests=manifests)
    logger.info("done: %s", summary)
    if random_clip_seed(args.clip_weights) is not None:  # said again at the end, where it is read
        logger.warning("these CAMs come from RANDOM CLIP weights (--clip-weights %s): they carry NO class "
                       "information", args.clip_weights)
    if summary.failed:
        print(f"error: {len(summary.failed)} image(s) could not be read; their {summary.failed_pairs} pair(s) "
              "have no CAM (fix or remove them and run the same command again to finish):", file=sys.stderr)
        for path, error in summary.failed:
            print(f"  {path}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # python -m priors.cam_job BENCHMARK [flags]: a benchmark without a CAM script of its own
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print(f"usage: python -m priors.cam_job {{{','.join(BENCHMARKS)}}} [flags]", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
