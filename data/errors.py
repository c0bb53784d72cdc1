"""Errors of the data package: every bad input names the file it came from."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from common.errors import UserInputError

__all__ = ["DataError", "SplitError", "SplitNotFoundError", "SplitChecksumError", "UnsafePickleError",
           "MissingCAMError", "file_errors"]


class DataError(UserInputError, ValueError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


class SplitError(DataError):
    """A split list is missing, malformed, empty or fails its checksum."""


class SplitNotFoundError(SplitError, FileNotFoundError):
    """The split lists are neither on disk nor fetchable."""


class SplitChecksumError(SplitError):
    """A fetched or cached split file does not match HSNet's published SHA-256."""


class UnsafePickleError(SplitError):
    """A split pickle references something other than dict/list/str/int (it is never executed)."""


class MissingCAMError(DataError, FileNotFoundError):
    """CAM priors needed by a dataset are not on disk."""


@contextmanager
def file_errors(path: Path, what: str, error: type[DataError] = DataError) -> Iterator[None]:
    """Reading the ``what`` file ``path`` (an image, a mask, a prior): a missing or undecodable file raises
    ``error`` naming it (PIL's ``UnidentifiedImageError`` is an ``OSError``)."""
    try:
        yield
    except FileNotFoundError as exc:
        raise error(f"{what} {path} not found") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise error(f"cannot read {what} {path}: {exc}") from exc
