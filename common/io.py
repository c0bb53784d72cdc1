"""Atomic file writes (a file is either absent, or complete), and file hashing.

Every writer goes through a temporary file in the destination folder, flushed and fsynced, then
``os.replace``-d onto the final name, so a killed job never leaves a truncated checkpoint, CAM or log. The
file gets the mode the umask gives any new file (0644 under the usual umask 022), so that others can read a
shared run. A write that the machine refuses (full disk, quota, file-size limit, read-only folder) raises
:class:`OutputWriteError` naming the file, and the file that was there before is left as it was.

:func:`prepare_output_folder` creates an entry point's output folder and checks that it can be written
before any work starts.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import torch

from common.errors import UserInputError

PathLike = Union[str, os.PathLike]

# What the machine, not the program, gets wrong when writing; anything else stays a bug with its traceback.
_REFUSED_WRITES = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


class OutputWriteError(UserInputError, OSError):
    """An output file could not be written: the disk is full, a quota or file-size limit was hit, or the
    folder is read-only. The message names the file, its size and the free space."""


@contextlib.contextmanager
def refused_writes_reported(path: PathLike, size: Optional[int] = None) -> Iterator[None]:
    """Turn a write that the machine refuses inside the block (see the module docstring) into an
    :class:`OutputWriteError` naming ``path`` (and ``size`` bytes, when given); other errors pass unchanged."""
    try:
        yield
    except OutputWriteError:
        raise
    except OSError as exc:
        if exc.errno not in _REFUSED_WRITES:
            raise
        path = Path(path)
        folder = next((p for p in (path.parent, *path.parents) if p.is_dir()), Path("/"))
        try:
            free = f"; {shutil.disk_usage(folder).free / 1e6:.0f} MB free in {folder}"
        except OSError:
            free = ""
        what = f"{path} ({size / 1e6:.1f} MB)" if size is not None else str(path)
        raise OutputWriteError(f"cannot write {what}: {exc.strerror or exc}{free}. Make room or choose another "
                               "output folder, then run the command again") from exc


def _create_temp_file(path: Path) -> tuple[int, str]:
    """A new ``.{name}.XXXXXXXX.tmp`` beside ``path``, opened for writing. Unlike ``tempfile.mkstemp`` (always
    0600) it is created with mode 0666 less the umask, the mode of any new file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp_name = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp_name, flags, 0o666), tmp_name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(path.parent))


def atomic_write_bytes(data: bytes, path: PathLike) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent folders. Returns the final path.

    Raises:
        OutputWriteError: the machine refused the write (see the module docstring); ``path`` is unchanged.
    """
    path = Path(path)
    with refused_writes_reported(path, len(data)):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = _create_temp_file(path)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
    return path


def atomic_write_text(text: str, path: PathLike, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(text.encode(encoding), path)


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def names_sha256(names: Sequence[str]) -> str:
    """Hex SHA-256 of names joined with newlines: how a CAM manifest records a vocabulary (class names)."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (serialised in memory, then written and renamed)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(buffer.getvalue(), path)


class OutputFolderError(UserInputError, OSError):
    """An output folder named by a flag cannot be used: it is a file, cannot be created or is not writable."""


def check_not_a_file(path: PathLike, flag: str) -> None:
    """Raise :class:`OutputFolderError` naming ``flag`` when ``path`` or one of its parents is a file."""
    path = Path(path)
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking == path:
        raise OutputFolderError(f"{flag} {path} is a file, not a folder; choose a folder")
    if blocking is not None:
        raise OutputFolderError(f"{flag} {path}: {blocking} is a file, not a folder; choose another {flag}")


def prepare_output_folder(path: PathLike, flag: str) -> bool:
    """Create the output folder ``path`` (and its parents) and check that a file can be written into it, so
    that a bad output path stops an entry point before any work. Returns whether this call created ``path``
    (a folder it created is removed again when it cannot be written into).

    Raises:
        OutputFolderError: naming ``flag`` and ``path``: it (or a parent) is a file, or it cannot be created
            or written into (the system's reason is given).
    """
    path = Path(path)
    check_not_a_file(path, flag)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"{flag} {path}: cannot create the folder ({exc.strerror or exc}); choose "
                                f"another {flag}") from exc
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        if created:
            remove_if_empty(path)
        raise OutputFolderError(f"{flag} {path}: cannot write into the folder ({exc.strerror or exc}); choose "
                                f"another {flag}") from exc
    return created


def remove_if_empty(path: PathLike) -> None:
    """Remove the folder ``path`` if it exists and is empty (an output folder made for a job that stopped
    before writing anything); anything else is left alone."""
    with contextlib.suppress(OSError):
        Path(path).rmdir()
