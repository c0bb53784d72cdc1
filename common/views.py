"""A live, read-only dict computed on each access: the per-name views of a registry (benchmark specs, prior
recipes), so that an entry added later (a plug-in, a test) is in every view."""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping


class LiveMapping(Mapping[str, Any]):
    """``items()`` recomputed on every access; its repr is the tuple of its keys when ``keys_repr``."""

    def __init__(self, items: Callable[[], dict[str, Any]], *, keys_repr: bool = False) -> None:
        self._items, self._keys_repr = items, keys_repr

    def __getitem__(self, key: str) -> Any:
        return self._items()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return repr(tuple(self._items()) if self._keys_repr else self._items())
