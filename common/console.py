"""Console logging that survives a replaced ``sys.stdout`` / ``sys.stderr``.

* :class:`ConsoleHandler` writes each record to the stream that is current when the record is written.
* :func:`ensure_console_logging` is what the command-line tools call instead of ``logging.basicConfig``.
"""
from __future__ import annotations

import logging
import sys
from typing import Any


class ConsoleHandler(logging.StreamHandler):
    """A StreamHandler on whatever ``sys.stdout`` (or ``sys.stderr``) is when a record is written.

    ``logging.StreamHandler(sys.stdout)`` keeps the stream object it was given: once that stream is replaced
    and closed (a library that captures output, pytest's capture between tests) every later record ends in
    "--- Logging error ---". This handler looks the stream up per record; :meth:`setStream` still pins one
    (the progress bar writes records above itself that way), and pinning the current stream follows it again.
    """

    def __init__(self, stream_name: str = "stderr") -> None:
        if stream_name not in ("stdout", "stderr"):
            raise ValueError(f"stream_name must be 'stdout' or 'stderr', got {stream_name!r}")
        self._stream_name = stream_name
        self._pinned: Any = None
        super().__init__(getattr(sys, stream_name))

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return self._pinned if self._pinned is not None else getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value: Any) -> None:
        self._pinned = None if value is getattr(sys, self._stream_name) else value


def ensure_console_logging(fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s",
                           level: int = logging.INFO) -> None:
    """Log records to stderr for a command-line tool, unless the root logger already has handlers (a caller
    that configured logging keeps its own)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = ConsoleHandler("stderr")
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level)
