"""Atomic file writes (a file is either absent, or complete), and file hashing.

Every writer goes through a temporary file in the destination folder, flushed and fsynced, then
``os.replace``-d onto the final name, so a killed job never leaves a truncated checkpoint, CAM or log.
A write that the machine refuses (full disk, quota, file-size limit, read-only folder) raises
:class:`OutputWriteError` naming the file, and the file that was there before is left as it was.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch

from common.errors import UserInputError

PathLike = Union[str, os.PathLike]

# What the machine, not the program, gets wrong when writing; anything else stays a bug with its traceback.
_REFUSED_WRITES = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


class OutputWriteError(UserInputError, OSError):
    """An output file could not be written: the disk is full, a quota or file-size limit was hit, or the
    folder is read-only. The message names the file, its size and the free space."""


def _refused_write(path: Path, size: Optional[int], exc: OSError) -> OutputWriteError:
    folder = next((p for p in (path.parent, *path.parents) if p.is_dir()), Path("/"))
    try:
        free = f"; {shutil.disk_usage(folder).free / 1e6:.0f} MB free in {folder}"
    except OSError:
        free = ""
    what = f"{path} ({size / 1e6:.1f} MB)" if size is not None else str(path)
    return OutputWriteError(f"cannot write {what}: {exc.strerror or exc}{free}. Make room or choose another "
                            "output folder, then run the command again")


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
        raise _refused_write(Path(path), size, exc) from exc


def atomic_write_bytes(data: bytes, path: PathLike) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent folders. Returns the final path.

    Raises:
        OutputWriteError: the machine refused the write (see the module docstring); ``path`` is unchanged.
    """
    path = Path(path)
    with refused_writes_reported(path, len(data)):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
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


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (serialised in memory, then written and renamed)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(buffer.getvalue(), path)
