"""File digests: the SHA-256 of a file, read in blocks so a large checkpoint never sits in memory at once."""
from __future__ import annotations

import hashlib
import os
from typing import Union

PathLike = Union[str, os.PathLike]


def sha256_file(path: PathLike, block_size: int = 1 << 20) -> str:
    """Hex SHA-256 of the bytes of the file at ``path``, streamed in ``block_size`` blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()
