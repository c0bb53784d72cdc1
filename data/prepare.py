"""Download and lay out PASCAL-5i / COCO-20i / FSS-1000: ``python -m data.prepare pascal|coco|fss --datapath DIR``.

What it fetches (official sources; each archive downloaded with HTTP Range resume into ``--download-dir``,
checked, then unpacked, every step skipped when already done):

PASCAL (``DIR/VOC2012/{JPEGImages,SegmentationClassAug}``)
    * ``VOCtrainval_11-May-2012.tar`` from host.robots.ox.ac.uk (MD5 6cd6e144f989b92b3379bac3b3de84fd, the
      value torchvision's ``VOCSegmentation`` checks); its ``VOCdevkit/VOC2012/`` becomes ``DIR/VOC2012/``.
    * ``SegmentationClassAug.zip``: the 10,582 + 1,449 "trainaug" masks (VOC2012 masks plus the Semantic
      Boundaries Dataset of Hariharan et al., ICCV 2011, converted to VOC's palette-free 0-20/255 PNGs), as
      distributed by DrSleep's tensorflow-deeplab-resnet on Dropbox (HSNet's README links a copy on Google Drive).
      No published checksum exists, so only a non-empty, readable zip is required.
COCO (``DIR/COCO2014/{train2014,val2014}``, ``DIR/COCO2014/annotations/{instances_*.json,train2014,val2014}``)
    * ``train2014.zip``, ``val2014.zip``, ``annotations_trainval2014.zip`` from images.cocodataset.org
      (MD5 values as used by several public download scripts, e.g. pystiche and LAVIS).
    * The COCO-20i mask PNGs are built from ``instances_{split}.json`` with pycocotools: pixel = contiguous
      class 1..80 (rank of the category id; HSNet's class index + 1), 0 background, following
      :data:`data.coco_masks.COCO_PAINT_ORDER`: all annotations *including crowd regions* are painted, larger
      areas first so that smaller objects overlapping them stay on top, ties by annotation id. (HSNet's own
      masks come from its Google Drive without a documented rule; where objects overlap, a few pixels may differ.)

FSS-1000 (``DIR/FSS-1000/<class>/<n>.jpg|png``)
    * HSNet distributes it from Google Drive only (:data:`FSS_DRIVE_URL`, linked from HSNet's README), which
      cannot be fetched without a browser: download it yourself and pass ``--archive PATH``, or put it at
      ``--download-dir``/``FSS-1000.zip`` (:data:`FSS_ARCHIVE`, our name for it). No checksum is published; the
      archive must be a readable zip holding ``<class>/{1..10}.jpg`` and ``.png`` of every class of HSNet's three
      class lists (under any one top folder, e.g. ``FSS-1000/``). Those class folders are unpacked into
      ``DIR/FSS-1000``; the archive, yours, is left where it is.

Split lists are then fetched into the verified cache (:mod:`data.splits`) unless ``--no-splits``; FSS-1000
needs its class lists before unpacking (the verified cache, or ``--splitpath``).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import io
import logging
import multiprocessing
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Optional, Sequence

import numpy as np
from PIL import Image

from common.cli import ArgumentParser, run_cli
from common.console import ensure_console_logging
from common.flags import add_flags
from common.progress import Progress
from data.benchmarks import BENCHMARKS, FSS_DIR, FSS_IMAGES_PER_CLASS
from data.coco_masks import paint_coco_mask
from data.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["COCO_SOURCES", "FSS_ARCHIVE", "FSS_DRIVE_URL", "PASCAL_SOURCES", "Source", "build_coco_masks",
           "download", "main", "prepare_coco", "prepare_fss", "prepare_pascal"]

CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """One archive: where it comes from and how it is checked.

    ``members`` is the archive path prefix to unpack and ``into`` the folder (relative to --datapath) that
    prefix is unpacked into; everything outside the prefix is skipped.
    """

    name: str
    url: str
    md5: Optional[str]
    members: str
    into: str


PASCAL_SOURCES = (
    Source("VOCtrainval_11-May-2012.tar", "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
           "6cd6e144f989b92b3379bac3b3de84fd", "VOCdevkit/VOC2012/", "VOC2012"),
    Source("SegmentationClassAug.zip", "https://www.dropbox.com/s/oeu149j8qtbs1x0/SegmentationClassAug.zip?dl=1",
           None, "SegmentationClassAug/", "VOC2012/SegmentationClassAug"),
)
COCO_SOURCES = (
    Source("train2014.zip", "http://images.cocodataset.org/zips/train2014.zip",
           "0da8c0bd3d6becc4dcb32757491aca88", "train2014/", "COCO2014/train2014"),
    Source("val2014.zip", "http://images.cocodataset.org/zips/val2014.zip",
           "a3d79f5ed8d289b7a7554ce06a5782b3", "val2014/", "COCO2014/val2014"),
    Source("annotations_trainval2014.zip", "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
           "0a379cfc70b0e71301e0f377548639bd", "annotations/instances_", "COCO2014/annotations/instances_"),
)
COCO_SPLITS = ("train2014", "val2014")
FSS_DRIVE_URL = "https://drive.google.com/file/d/1Fn-cUESMMF1pQy8Xff-vPQvXJdZoUlP3/view?usp=sharing"
FSS_README_URL = "https://github.com/juhongm999/hsnet#3-fss-1000"
FSS_ARCHIVE = "FSS-1000.zip"  # our name for the Drive file: where prepare_fss looks without --archive


# ----------------------------------------------------------------------------------------------------------
# Download with resume and checksum
# ----------------------------------------------------------------------------------------------------------
def _md5(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - integrity check against published values, not security
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, *, md5: Optional[str] = None, timeout: float = 60.0,
             progress: Optional[Callable[[int, Optional[int]], None]] = None) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial ``dest.part`` with an HTTP Range request.

    A finished download is checked against ``md5`` (when given) once and marked ``dest.verified``; a
    mismatch deletes the file and raises :class:`DataError`. A server that ignores Range restarts the file.
    """
    dest = Path(dest)
    marker = dest.with_name(dest.name + ".verified")
    if dest.is_file() and marker.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if not dest.is_file():
        have = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - official/loopback URLs
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing left to fetch: the part file is complete
                response = None
            else:
                raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise DataError(f"download of {url} failed ({exc}); run the command again to resume") from exc
        if response is not None:
            with response:
                resumed = have and response.status == 206
                if have and not resumed:
                    logger.info("%s: server ignored the Range request; starting over", url)
                    have = 0
                length = response.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                logger.info("%s %s (%s)", "resuming" if resumed else "downloading", url,
                            f"{total / 1e6:.1f} MB" if total else "size unknown")
                done = have
                if progress is not None:
                    progress(done, total)
                try:
                    with open(part, "ab" if resumed else "wb") as f:
                        for block in iter(lambda: response.read(CHUNK), b""):
                            f.write(block)
                            done += len(block)
                            if progress is not None:
                                progress(done, total)
                except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                    raise DataError(f"download of {url} interrupted at {done} bytes ({exc}); "
                                    "run the command again to resume") from exc
                if total is not None and done != total:
                    raise DataError(f"download of {url} stopped at {done} of {total} bytes; run again to resume")
        os.replace(part, dest)
    if md5 is not None:
        actual = _md5(dest)
        if actual != md5:
            dest.unlink()
            raise DataError(f"{dest}: MD5 {actual} differs from the published {md5} (deleted; run again)")
    marker.write_text(f"{md5 or 'no published checksum'}\n")
    return dest


# ----------------------------------------------------------------------------------------------------------
# Unpacking
# ----------------------------------------------------------------------------------------------------------
def _target(datapath: Path, source: Source, member: str) -> Optional[Path]:
    """Where archive member ``member`` goes, or None if it is outside ``source.members``. Rejects escapes."""
    if not member.startswith(source.members) or member.endswith("/"):
        return None
    rest = member[len(source.members):]
    parts = PurePosixPath(rest).parts
    if not rest or any(p in ("..", "") for p in parts) or PurePosixPath(rest).is_absolute():
        raise DataError(f"unsafe path {member!r} in {source.name}")
    # a prefix ending in "/" (or none: the archive's top) is a folder; otherwise (annotations/instances_) a
    # file-name prefix kept as is
    folder = source.members.endswith("/") or not source.members
    return datapath / (f"{source.into}/{rest}" if folder else source.into + rest)


def unpack(archive: Path, datapath: Path, source: Source,
           accept: Optional[Callable[[str], bool]] = None) -> int:
    """Unpack the members of ``archive`` under ``source.members`` into ``datapath/source.into``; returns the
    number of files written. Links, devices and paths escaping the target are never extracted; ``accept``
    (given the member's path below ``source.members``) may skip more. Progress is reported in archive members
    (:mod:`common.progress`; a tar's total is unknown without reading it twice)."""
    count = 0
    zipped = archive.name.endswith(".zip")
    with zipfile.ZipFile(archive) if zipped else tarfile.open(archive) as box:
        # (name, regular file?, member) of every member, and how to open one
        members = ([(i.filename, not i.is_dir(), i) for i in box.infolist()] if zipped
                   else ((i.name, i.isfile(), i) for i in box))
        open_member = box.open if zipped else box.extractfile
        with Progress(len(members) if zipped else None, f"unpack {archive.name}", unit="members") as progress:
            for name, is_file, info in members:
                progress.update()
                target = _target(datapath, source, name)
                if target is None or not is_file or (accept and not accept(name[len(source.members):])):
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with open_member(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                count += 1
    if count == 0:
        raise DataError(f"{archive} holds no file under {source.members!r}; is it the right archive?")
    return count


def _fetch_and_unpack(sources: Sequence[Source], datapath: Path, download_dir: Optional[Path], *, keep: bool,
                      timeout: float) -> None:
    download_dir = Path(download_dir or datapath / "downloads")
    state = datapath / ".prepare"
    state.mkdir(parents=True, exist_ok=True)
    for source in sources:
        done = state / f"{source.name}.unpacked"
        if done.is_file():
            logger.info("%s already unpacked", source.name)
            continue
        with _DownloadProgress(source.name) as report:
            archive = download(source.url, download_dir / source.name, md5=source.md5, timeout=timeout,
                               progress=report)
        try:
            count = unpack(archive, datapath, source)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
            raise DataError(f"{archive} is not a valid archive ({exc}); delete it and run again") from exc
        done.write_text(f"{count} files\n")
        logger.info("%s: %d files unpacked into %s", source.name, count, datapath / source.into)
        if not keep:
            archive.unlink()


class _DownloadProgress:
    """:func:`download`'s ``progress(done_bytes, total_bytes)`` callback, reported in MB through
    :mod:`common.progress` (rate and ETA of this session, a resumed part counted as done); a context manager."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.progress: Optional[Progress] = None

    def __call__(self, done: int, total: Optional[int]) -> None:
        if self.progress is None:  # the first call gives the bytes already there
            self.progress = Progress(total / 1e6 if total else None, f"download {self.name}", unit="MB",
                                     leave=True, initial=done / 1e6)
        else:
            self.progress.update(done / 1e6 - self.progress.done)

    def __enter__(self) -> "_DownloadProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.close()


# ----------------------------------------------------------------------------------------------------------
# COCO-20i masks
# ----------------------------------------------------------------------------------------------------------
_COCO: Any = None  # the loaded COCO index, shared with forked workers
_LABELS: dict[int, int] = {}


def _write_png(mask: np.ndarray, path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(mask, "L").save(buf, format="PNG")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)  # a crash never leaves a half-written PNG that a rerun would skip


def _mask_job(args: tuple[list[int], str]) -> tuple[int, int]:
    """Masks of one chunk of images: (PNGs written, images in the chunk)."""
    image_ids, out_dir = args
    written = 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # pycocotools vs numpy 2
        for image_id in image_ids:
            info = _COCO.imgs[image_id]
            path = Path(out_dir) / (Path(info["file_name"]).stem + ".png")
            if path.is_file():
                continue
            anns = _COCO.imgToAnns.get(image_id, [])
            mask = paint_coco_mask(anns, int(info["height"]), int(info["width"]), _COCO.annToMask, _LABELS)
            _write_png(mask, path)
            written += 1
    return written, len(image_ids)


def build_coco_masks(instances_json: Path, out_dir: Path, *, nworker: int = 0) -> int:
    """Write one COCO-20i label PNG per image of ``instances_json`` into ``out_dir`` (existing ones are kept).

    Pixel value = 1 + rank of the category id among the 80 sorted ids, 0 background; overlaps resolved by
    :data:`data.coco_masks.COCO_PAINT_ORDER` (crowd regions included). Returns the number of PNGs written.
    """
    global _COCO, _LABELS
    from pycocotools.coco import COCO

    instances_json = Path(instances_json)
    if not instances_json.is_file():
        raise DataError(f"{instances_json} not found")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    printed = io.StringIO()  # pycocotools prints progress to stdout; it goes to the log instead
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            coco = COCO(str(instances_json))
    finally:
        for line in printed.getvalue().splitlines():
            logger.debug("pycocotools: %s", line)
    cat_ids = sorted(coco.getCatIds())
    if len(cat_ids) != 80:
        raise DataError(f"{instances_json} has {len(cat_ids)} categories; COCO-20i needs the 80 of COCO 2014")
    _COCO, _LABELS = coco, {cid: rank + 1 for rank, cid in enumerate(cat_ids)}
    ids = sorted(coco.getImgIds())
    chunks = [(ids[i:i + 256], str(out_dir)) for i in range(0, len(ids), 256)]
    written = 0
    fork = nworker > 0 and "fork" in multiprocessing.get_all_start_methods()
    try:
        with (Progress(len(ids), f"{instances_json.name} masks", unit="images") as progress,
              multiprocessing.get_context("fork").Pool(nworker) if fork else contextlib.nullcontext() as pool):
            for chunk_written, chunk_images in (pool.imap_unordered if fork else map)(_mask_job, chunks):
                written += chunk_written
                progress.update(chunk_images)
    finally:
        _COCO, _LABELS = None, {}
    logger.info("%s: %d masks written to %s (%d images)", instances_json.name, written, out_dir, len(ids))
    return written


# ----------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------
def prepare_pascal(datapath: Path, *, download_dir: Optional[Path] = None, sources: Sequence[Source] = PASCAL_SOURCES,
                   keep_archives: bool = False, timeout: float = 60.0) -> Path:
    """Download and unpack PASCAL VOC2012 + SegmentationClassAug into ``datapath/VOC2012``."""
    datapath = Path(datapath)
    _fetch_and_unpack(sources, datapath, download_dir, keep=keep_archives, timeout=timeout)
    for sub in ("JPEGImages", "SegmentationClassAug"):
        if not (datapath / "VOC2012" / sub).is_dir():
            raise DataError(f"{datapath / 'VOC2012' / sub} missing after unpacking")
    return datapath / "VOC2012"


def prepare_coco(datapath: Path, *, download_dir: Optional[Path] = None, sources: Sequence[Source] = COCO_SOURCES,
                 keep_archives: bool = False, timeout: float = 60.0, nworker: int = 0) -> Path:
    """Download and unpack COCO 2014 into ``datapath/COCO2014`` and build the COCO-20i mask PNGs."""
    datapath = Path(datapath)
    _fetch_and_unpack(sources, datapath, download_dir, keep=keep_archives, timeout=timeout)
    base = datapath / "COCO2014"
    for split in COCO_SPLITS:
        done = datapath / ".prepare" / f"masks_{split}.done"
        if done.is_file():
            continue
        build_coco_masks(base / "annotations" / f"instances_{split}.json", base / "annotations" / split,
                         nworker=nworker)
        done.write_text("ok\n")
    return base


def _fss_archive_prefix(names: Sequence[str], classes: set[str], archive: Path) -> str:
    """The folder of ``archive`` holding the class folders (``""`` for the top), checked to hold every class's
    ``{1..10}.jpg`` and ``.png``."""
    by_prefix: dict[str, set[str]] = {}
    for name in names:
        parts = PurePosixPath(name).parts
        if len(parts) >= 2 and parts[-2] in classes and parts[0] != "__MACOSX":
            prefix = "".join(f"{p}/" for p in parts[:-2])
            by_prefix.setdefault(prefix, set()).add(f"{parts[-2]}/{parts[-1]}")
    if not by_prefix:
        raise DataError(f"{archive} holds no FSS-1000 class folder (<class>/1.jpg for the classes of HSNet's lists); "
                        f"is it the FSS-1000 archive of {FSS_DRIVE_URL}?")
    if len(by_prefix) > 1:
        raise DataError(f"{archive} holds FSS-1000 class folders under several folders ({sorted(by_prefix)}); "
                        "expected one")
    prefix, files = next(iter(by_prefix.items()))
    needed = [f"{c}/{k}.{ext}" for c in sorted(classes) for k in range(1, FSS_IMAGES_PER_CLASS + 1)
              for ext in ("jpg", "png")]
    missing = [f for f in needed if f not in files]
    if missing:
        raise DataError(f"{archive} lacks {len(missing)} of the {len(needed)} files HSNet's FSS-1000 protocol reads "
                        f"(e.g. {prefix}{missing[0]}); download it again from {FSS_DRIVE_URL}")
    return prefix


def prepare_fss(datapath: Path, split_root: Path, *, archive: Optional[Path] = None,
                download_dir: Optional[Path] = None) -> Path:
    """Check the FSS-1000 archive against the class lists in ``split_root`` and unpack it into
    ``datapath/FSS-1000``; skipped when already done.

    Args:
        archive: the zip from :data:`FSS_DRIVE_URL`; default ``download_dir/FSS-1000.zip``
            (``download_dir`` defaults to ``datapath/downloads``).
    Raises:
        DataError: no archive there (the message says where to get it and where to put it), not a readable zip,
            files of the listed classes missing, or an unsafe member path.
    """
    from data.splits import FSS_SPLITS, read_fss_split

    datapath = Path(datapath)
    target = datapath / FSS_DIR
    done = datapath / ".prepare" / f"{FSS_DIR}.unpacked"
    if done.is_file():
        logger.info("%s already unpacked", target)
        return target
    archive = Path(archive) if archive else Path(download_dir or datapath / "downloads") / FSS_ARCHIVE
    if not archive.is_file():
        raise DataError(f"FSS-1000 archive {archive} not found. HSNet distributes it from Google Drive only: "
                        f"download it in a browser from {FSS_DRIVE_URL} (linked from {FSS_README_URL}) and put it "
                        f"at {archive}, or pass --archive PATH")
    lists = {split: read_fss_split(split_root, split) for split in FSS_SPLITS}
    classes = {name for names in lists.values() for name in names}
    try:
        with zipfile.ZipFile(archive) as zf:
            prefix = _fss_archive_prefix(zf.namelist(), classes, archive)
        source = Source(archive.name, FSS_DRIVE_URL, None, prefix, FSS_DIR)
        count = unpack(archive, datapath, source, accept=lambda rest: PurePosixPath(rest).parts[0] in classes)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{archive} is not a readable zip ({exc}); download it again from {FSS_DRIVE_URL}") from exc
    for names in lists.values():  # spot check: the first and last class of each list
        for name in (min(names), max(names)):
            if not (target / name / "1.jpg").is_file():
                raise DataError(f"{target / name / '1.jpg'} missing after unpacking {archive}")
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(f"{count} files\n")
    logger.info("%s: %d files of %d classes unpacked into %s", archive.name, count, len(classes), target)
    return target


def build_parser() -> ArgumentParser:
    """Flags of ``python -m data.prepare``."""
    parser = ArgumentParser(prog="python -m data.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=BENCHMARKS)
    add_flags(parser, "prepare", "--datapath")
    parser.add_argument("--download-dir", type=Path, default=None, help="archives (default: DATAPATH/downloads)")
    parser.add_argument("--archive", type=Path, default=None,
                        help=f"fss: the FSS-1000 zip you downloaded from {FSS_DRIVE_URL} (default: "
                             f"DOWNLOAD_DIR/{FSS_ARCHIVE})")
    add_flags(parser, "prepare", "--splitpath")
    parser.add_argument("--keep-archives", action="store_true", help="keep the archives after unpacking")
    add_flags(parser, "prepare", "--nworker")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    parser.add_argument("--no-splits", dest="splits", action="store_false",
                        help="do not fetch HSNet's split lists into the verified cache")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI; returns 0 on success, 2 on a data/download error (message printed, no traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.benchmark != "fss" and (args.archive or args.splitpath):
        parser.error(f"arguments --archive/--splitpath: only for fss ({args.benchmark} is downloaded from its "
                     "official sources)")
    if args.benchmark == "fss" and not args.splits and not args.splitpath:
        parser.error("argument --no-splits: fss needs HSNet's class lists to check the archive; leave it out or "
                     "pass --splitpath")
    ensure_console_logging()
    return run_cli(lambda: _prepare(args), "python -m data.prepare")


def _prepare(args: argparse.Namespace) -> int:
    """Fetch and lay out ``args.benchmark``; errors are DataErrors naming the file or URL."""
    from common.io import prepare_output_folder
    from data.splits import resolve_split_root

    prepare_output_folder(args.datapath, "--datapath")
    if args.download_dir is not None:
        prepare_output_folder(args.download_dir, "--download-dir")

    if args.benchmark == "pascal":
        out = prepare_pascal(args.datapath, download_dir=args.download_dir, keep_archives=args.keep_archives,
                             timeout=args.timeout)
    elif args.benchmark == "coco":
        out = prepare_coco(args.datapath, download_dir=args.download_dir, keep_archives=args.keep_archives,
                           timeout=args.timeout, nworker=args.nworker)
    else:
        split_root = resolve_split_root(args.splitpath, timeout=args.timeout)
        logger.info("split lists verified in %s", split_root)
        out = prepare_fss(args.datapath, split_root, archive=args.archive, download_dir=args.download_dir)
    if args.splits and args.benchmark != "fss":
        logger.info("split lists verified in %s", resolve_split_root(None, timeout=args.timeout))
    print(f"{args.benchmark} ready under {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
