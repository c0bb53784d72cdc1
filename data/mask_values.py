"""Mask files holding values outside the class range: read as background, as the released loaders read them,
each one warned about once, and counted for the end of the run.

The released PASCAL-5i and COCO-20i datasets keep a mask pixel only where it equals the episode's class
(and PASCAL's 255 boundary as the ignore map); every other value, whatever it is, is background. A file with
such values is read the same way here, but not silently: :class:`OutsideValueReport` warns once per file,
naming it and the values found, and gives the count at the end (``--strict-masks`` makes them errors).

DataLoader workers are separate processes: a worker cannot warn once per run nor count for the main process.
So a worker hands what it found to the main process inside the episode's batch dict, under
:data:`NOTES_KEY` (a string per episode: JSON ``[[path, [values]], ...]``, empty when nothing was found);
:class:`data.dataset.EpisodeLoader` takes that key out of every batch and passes it to the report. In the
main process (no workers) the dataset reports directly and the key never appears.
"""
from __future__ import annotations

import json
import logging
from typing import Iterable, Optional, Sequence

import torch.distributed as dist

logger = logging.getLogger(__name__)

NOTES_KEY = "_masks_outside_class_range"
STRICT_FLAG = "--strict-masks"  # the flag that makes such values an error, named in the messages

__all__ = ["NOTES_KEY", "OutsideValueReport", "decode_notes", "encode_notes"]


def encode_notes(notes: Sequence[tuple[str, Sequence[int]]]) -> str:
    """``[(path, values), ...]`` -> the batch string (``""`` when empty)."""
    return json.dumps([[str(path), [int(v) for v in values]] for path, values in notes]) if notes else ""


def decode_notes(text: str) -> list[tuple[str, list[int]]]:
    """The inverse of :func:`encode_notes`."""
    return [(path, list(values)) for path, values in json.loads(text)] if text else []


class OutsideValueReport:
    """The mask files read with values outside the class range (read as background), in the main process."""

    def __init__(self) -> None:
        self.files: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.files)

    def add(self, path: str, values: Iterable[int]) -> None:
        """Record ``path`` (warning the first time it is seen) with the out-of-range ``values`` it holds."""
        path = str(path)
        if path in self.files:
            return
        self.files[path] = sorted({int(v) for v in values})
        logger.warning("mask %s holds value(s) %s outside the class range; read as background, as the released "
                       "code reads them (%s stops instead)", path, self.files[path], STRICT_FLAG)

    def add_encoded(self, texts: Iterable[str]) -> None:
        """Record the notes of a batch (its :data:`NOTES_KEY` strings, one per episode)."""
        for text in texts:
            for path, values in decode_notes(text):
                self.add(path, values)

    def gathered(self) -> dict[str, list[int]]:
        """The files of every rank under torch.distributed (a collective: call it on all ranks), else ours."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return dict(self.files)
        parts: list[Optional[dict[str, list[int]]]] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, self.files)
        return {path: values for part in parts for path, values in (part or {}).items()}

    def summary(self, files: Optional[dict[str, list[int]]] = None) -> Optional[str]:
        """The end-of-run line (None when no file had such values); ``files`` defaults to this process's."""
        files = self.files if files is None else files
        if not files:
            return None
        first = sorted(files)[0]
        return (f"{len(files)} mask file(s) held values outside the class range and were read as background, as "
                f"the released code reads them (first: {first} {files[first]}; a warning for each above); "
                f"{STRICT_FLAG} makes this an error")
