"""HSNet's PASCAL-5i / COCO-20i / FSS-1000 split lists: where they come from, how they are verified, how they
are read.

The lists are data we do not ship. ``--splitpath DIR`` points at a local copy in HSNet's ``data/splits`` layout::

    DIR/pascal/{trn,val}/fold{0..3}.txt     lines "{image}__{class:02d}" (1-based class)
    DIR/coco/{trn,val}/fold{0..3}.pkl       pickled dict {class 0..79: ["train2014/NAME.jpg", ...]}
    DIR/fss/{trn,val,test}.txt              one class folder name a line (HSNet's test.txt ends its lines
                                            with CRLF; read with universal newlines, as HSNet reads it)

A local folder is trusted as is (the synthetic benchmark writes its own lists, which naturally do not match
HSNet's checksums). Without ``--splitpath`` the files are fetched once from the public HSNet repository into
a git-ignored cache (``<repo>/.cache/splits``) and every cached file must match the SHA-256 below.

Pickles are never handed to :func:`pickle.load`: :class:`RestrictedUnpickler` resolves no global other than
``dict``/``list``/``str``/``int``, so a tampered file cannot run code, whatever its origin.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Union

from common.io import atomic_write_bytes, sha256_file
from common.paths import CACHE_ROOT
from data.benchmarks import FSS_SPLIT_CLASSES, NCLASS, NFOLDS, SPLIT_SHA256  # SHA-256: each benchmark's spec
from data.errors import SplitChecksumError, SplitError, SplitNotFoundError, UnsafePickleError

logger = logging.getLogger(__name__)

__all__ = [
    "HSNET_SPLITS_URL",
    "SPLIT_SHA256",
    "SPLITS_URL_ENV",
    "RestrictedUnpickler",
    "default_cache_dir",
    "fetch_splits",
    "read_coco_split",
    "read_fss_split",
    "read_pascal_split",
    "resolve_split_root",
]

HSNET_SPLITS_URL = "https://raw.githubusercontent.com/juhongm999/hsnet/main/data/splits"
SPLITS_URL_ENV = "IMR_HSNET_SPLITS_URL"  # overrides HSNET_SPLITS_URL (tests serve the files on loopback)
SPLITS = ("trn", "val")

_PASCAL_LINE = re.compile(r"^(?P<name>[^\s/\\]+)__(?P<cls>\d+)$")


def default_cache_dir() -> Path:
    """``<repo>/.cache/splits`` (git-ignored), where fetched split lists live."""
    return CACHE_ROOT / "splits"


def _where_to_put(cache: Path) -> str:
    return (f"Get HSNet's split lists (https://github.com/juhongm999/hsnet/tree/main/data/splits: the folders "
            f"pascal/, coco/ and fss/) and pass their folder with --splitpath DIR, or copy them into {cache}")


def fetch_splits(cache_dir: Optional[Path] = None, *, base_url: Optional[str] = None,
                 timeout: float = 30.0) -> Path:
    """Make sure every HSNet split file is in ``cache_dir`` and matches :data:`SPLIT_SHA256`; return it.

    Files already cached are checked, missing ones are downloaded (``base_url``, else ``$IMR_HSNET_SPLITS_URL``,
    else :data:`HSNET_SPLITS_URL`) and checked before they are written (atomically) into the cache.

    Raises:
        SplitNotFoundError: a file could not be fetched (offline, HTTP error).
        SplitChecksumError: a cached or fetched file differs from HSNet's; the message says where to put the files.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base = (base_url or os.environ.get(SPLITS_URL_ENV) or HSNET_SPLITS_URL).rstrip("/")
    for rel, expected in SPLIT_SHA256.items():
        path = cache / rel
        if path.is_file():
            actual = sha256_file(path)
            if actual != expected:
                raise SplitChecksumError(
                    f"{path}: SHA-256 {actual} differs from HSNet's {expected}; delete it to fetch it again. "
                    + _where_to_put(cache))
            continue
        url = f"{base}/{rel}"
        logger.info("fetching %s", url)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed https/loopback
                data = response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise SplitNotFoundError(f"could not fetch split list {url} ({exc}). " + _where_to_put(cache)) from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise SplitChecksumError(
                f"{url}: SHA-256 {actual} differs from HSNet's {expected}; nothing was written. "
                + _where_to_put(cache))
        atomic_write_bytes(data, path)
    return cache


def resolve_split_root(splitpath: Optional[Union[str, Path]] = None, *, cache_dir: Optional[Path] = None,
                       base_url: Optional[str] = None, timeout: float = 30.0) -> Path:
    """The folder holding the ``pascal/``, ``coco/`` and ``fss/`` split lists.

    Args:
        splitpath: a local copy (``--splitpath``), trusted as is; ``None`` -> the verified cache, fetched on
            first use (see :func:`fetch_splits`).
        cache_dir, base_url, timeout: for the fetch (defaults: ``<repo>/.cache/splits``, HSNet on GitHub, 30 s).
    Raises:
        SplitNotFoundError: ``splitpath`` is not a folder, or the lists cannot be fetched.
        SplitChecksumError: a cached or fetched file is not HSNet's.
    """
    if splitpath is not None:
        root = Path(splitpath).expanduser()
        if not root.is_dir():
            raise SplitNotFoundError(f"--splitpath {root} is not a folder; it must hold HSNet's data/splits "
                                     "layout (pascal/{trn,val}/fold{0-3}.txt, coco/{trn,val}/fold{0-3}.pkl, "
                                     "fss/{trn,val,test}.txt)")
        return root.resolve()
    return fetch_splits(cache_dir, base_url=base_url, timeout=timeout)


def _split_file(root: Union[str, Path], benchmark: str, split: str, fold: int) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= int(fold) < NFOLDS:
        raise ValueError(f"fold must be in 0..{NFOLDS - 1}, got {fold}")
    ext = "txt" if benchmark == "pascal" else "pkl"
    path = Path(root) / benchmark / split / f"fold{int(fold)}.{ext}"
    if not path.is_file():
        raise SplitNotFoundError(f"split list {path} not found (expected HSNet's data/splits layout under {root})")
    return path


def read_pascal_split(root: Union[str, Path], split: str, fold: int) -> list[tuple[str, int]]:
    """The (image name, 0-based class) pairs of ``{root}/pascal/{split}/fold{fold}.txt``, in file order.

    Raises:
        SplitError: a malformed line, a class outside 1..20, or no pairs at all (the message names the file).
    """
    path = _split_file(root, "pascal", split, fold)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SplitError(f"cannot read split list {path}: {exc}") from exc
    pairs: list[tuple[str, int]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        match = _PASCAL_LINE.match(line)
        if match is None:
            raise SplitError(f"{path}:{lineno}: expected 'IMAGE__CC', got {line!r}")
        cls = int(match["cls"])
        if not 1 <= cls <= NCLASS["pascal"]:
            raise SplitError(f"{path}:{lineno}: class {cls} outside 1..{NCLASS['pascal']}")
        pairs.append((match["name"], cls - 1))
    if not pairs:
        raise SplitError(f"split list {path} is empty")
    return pairs


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves no global except ``builtins.dict/list/str/int``: no code can run."""

    ALLOWED = {("builtins", "dict"), ("builtins", "list"), ("builtins", "str"), ("builtins", "int")}

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle API
        if (module, name) in self.ALLOWED:
            return getattr(__import__("builtins"), name)
        raise UnsafePickleError(f"refusing to load global {module}.{name}")


def _safe_unpickle(path: Path) -> object:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SplitError(f"cannot read split list {path}: {exc}") from exc
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}; a split pickle holds only dict/list/str/int") from exc
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a corrupt file
        raise SplitError(f"{path} is not a valid split pickle ({type(exc).__name__}: {exc})") from exc


def read_coco_split(root: Union[str, Path], split: str, fold: int) -> dict[int, list[str]]:
    """The class -> image list dict of ``{root}/coco/{split}/fold{fold}.pkl`` (0-based classes, lists in
    file order, names like ``train2014/COCO_train2014_000000000009.jpg``), loaded with the restricted unpickler.

    Raises:
        UnsafePickleError: the pickle references anything but dict/list/str/int (nothing is executed).
        SplitError: not a dict of int -> list of str, a class outside 0..79, or no image at all.
    """
    path = _split_file(root, "coco", split, fold)
    obj = _safe_unpickle(path)
    if not isinstance(obj, dict):
        raise SplitError(f"{path}: expected a dict class -> list of image names, got {type(obj).__name__}")
    out: dict[int, list[str]] = {}
    for key, names in obj.items():
        if type(key) is not int or not 0 <= key < NCLASS["coco"]:
            raise SplitError(f"{path}: class key {key!r} is not an int in 0..{NCLASS['coco'] - 1}")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SplitError(f"{path}: class {key} must map to a list of image names")
        out[key] = list(names)
    if not any(out.values()):
        raise SplitError(f"split list {path} is empty (no image for any class)")
    return out


FSS_SPLITS = tuple(FSS_SPLIT_CLASSES)  # "trn", "val", "test"
_FSS_BAD_NAME = re.compile(r"[\s/\\]")


def read_fss_split(root: Union[str, Path], split: str) -> list[str]:
    """The FSS-1000 class folder names of ``{root}/fss/{split}.txt``, in file order.

    Read as HSNet reads it: text mode (universal newlines, so the CRLF of HSNet's ``test.txt`` goes), one name a
    line. HSNet drops the last line (``split('\\n')[:-1]``), which is empty for its files; a file without a
    final newline keeps its last name here.

    Raises:
        SplitNotFoundError: the file is missing.
        SplitError: an empty or blank line inside the list, a name with spaces or path separators, a repeated
            name, no name at all, or more classes than HSNet's split has (the message names the file).
    """
    if split not in FSS_SPLITS:
        raise ValueError(f"split must be one of {FSS_SPLITS}, got {split!r}")
    path = Path(root) / "fss" / f"{split}.txt"
    if not path.is_file():
        raise SplitNotFoundError(f"split list {path} not found (expected HSNet's data/splits layout under {root})")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # text mode: universal newlines, as HSNet
    except (OSError, UnicodeDecodeError) as exc:
        raise SplitError(f"cannot read split list {path}: {exc}") from exc
    if lines and lines[-1] == "":
        lines.pop()
    names: list[str] = []
    for lineno, name in enumerate(lines, 1):
        if not name or _FSS_BAD_NAME.search(name) or name in (".", ".."):
            raise SplitError(f"{path}:{lineno}: expected one class folder name (no spaces or slashes), got {name!r}")
        names.append(name)
    if not names:
        raise SplitError(f"split list {path} is empty")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})[:3]
        raise SplitError(f"{path}: class(es) {repeated} listed more than once")
    if len(names) > FSS_SPLIT_CLASSES[split]:
        raise SplitError(f"{path} lists {len(names)} classes; HSNet's FSS-1000 {split} split has "
                         f"{FSS_SPLIT_CLASSES[split]} (class ids would run into the next split's)")
    return names
