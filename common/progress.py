"""Progress of long loops that reads well everywhere: a bar on a terminal, a line at a fixed interval elsewhere.

* On a terminal (stderr is a TTY): a tqdm bar on stderr. While it is shown, log records that go to a terminal
  are written above it (through ``tqdm.write``) instead of breaking it, e.g. test.py's per-batch lines.
* Without one (output redirected to a file, nohup, a scheduler): one log line every ``interval`` seconds
  (default 30), through :mod:`logging`, so it also lands in a run's ``log.txt``::

      [Epoch: 03] train: 12/37 batches (32%), 3.10 episodes/s, elapsed 40s, ETA 1m20s, mIoU 23.45

  A loop that ends within the first interval prints none.

Two environment variables change this for every script, without a flag:

* ``IMRHSNET_PROGRESS``: ``auto`` (the default: a bar on a terminal, lines otherwise), ``bar``, ``lines`` or
  ``off``;
* ``IMRHSNET_PROGRESS_INTERVAL``: seconds between lines (default 30; ``0``: a line after every step).

Under torchrun only rank 0 reports.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, TextIO, TypeVar

from common.errors import FlagError

logger = logging.getLogger(__name__)

MODE_VARIABLE = "IMRHSNET_PROGRESS"
INTERVAL_VARIABLE = "IMRHSNET_PROGRESS_INTERVAL"
MODES = ("auto", "bar", "lines", "off")
DEFAULT_INTERVAL = 30.0  # seconds between progress lines without a terminal
BAR_STATS_INTERVAL = 1.0  # seconds between updates of the bar's statistics (they may cost a GPU sync)

Stats = Callable[[], Mapping[str, float]]
T = TypeVar("T")


def progress_mode(requested: Optional[str] = None, stream: Optional[TextIO] = None) -> str:
    """``"bar"``, ``"lines"`` or ``"off"``: ``requested`` or ``$IMRHSNET_PROGRESS`` (default ``auto``: a bar when
    ``stream`` (default stderr) is a terminal, lines otherwise); ``"off"`` on torchrun ranks other than 0."""
    mode = (requested or os.environ.get(MODE_VARIABLE) or "auto").strip().lower()
    if mode not in MODES:
        raise FlagError(f"environment variable {MODE_VARIABLE}={mode!r}: expected one of {', '.join(MODES)}")
    if "RANK" in os.environ:  # imported only then: data.prepare runs without torch
        from common.distributed import current_rank

        if current_rank() != 0:
            return "off"
    if mode == "auto":
        stream = stream if stream is not None else sys.stderr
        return "bar" if _isatty(stream) else "lines"
    return mode


def progress_interval(requested: Optional[float] = None) -> float:
    """Seconds between progress lines: ``requested``, else ``$IMRHSNET_PROGRESS_INTERVAL``, else 30."""
    if requested is not None:
        return max(0.0, float(requested))
    text = os.environ.get(INTERVAL_VARIABLE)
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        raise FlagError(f"environment variable {INTERVAL_VARIABLE}={text!r}: expected a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise FlagError(f"environment variable {INTERVAL_VARIABLE}={text!r}: expected a number of seconds >= 0")
    return value


def format_duration(seconds: float) -> str:
    """``40s``, ``2m05s``, ``1h02m03s``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


class _AboveTheBar:
    """A stream for a logging handler that writes each record above the tqdm bars (``tqdm.write``)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.stream, end="")

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return _isatty(self.stream)


class Progress:
    """Progress of one loop of ``total`` steps (None: unknown), reported as the module docstring says.

    Args:
        total: steps the loop will take (batches, pairs, megabytes ...); None when unknown (no ETA).
        desc: what the loop is, first on the line (``"[Epoch: 03] train"``, ``"CAM"``).
        unit: the steps' name, plural (``"batches"``).
        rate_unit: the name of the items counted through ``update(items=...)`` (``"episodes"``): the rate is
            given in those per second; None: in steps per second.
        stats: called only when a line or the bar's statistics are written, e.g. ``lambda: {"mIoU": 23.4}``.
        enabled: False: report nothing (a ``--no-progress`` flag).
        mode, interval: override ``$IMRHSNET_PROGRESS`` / ``$IMRHSNET_PROGRESS_INTERVAL``.
        leave: keep the bar on the terminal when the loop ends.
        initial: steps done before this session (a resumed download); the rate and ETA count only this one's.
        clock: seconds (a test seam).
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, total: Optional[float], desc: str, *, unit: str = "batches", rate_unit: Optional[str] = None,
                 stats: Optional[Stats] = None, enabled: bool = True, mode: Optional[str] = None,
                 interval: Optional[float] = None, leave: bool = False, initial: float = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.rate_unit = rate_unit
        self.stats = stats
        self.mode = progress_mode(mode) if enabled else "off"
        self.interval = progress_interval(interval)
        self.clock = clock
        self.initial = initial
        self.done = initial
        self.items = 0.0
        self.lines_written = 0
        self.start = clock()
        self._last_report = self.start
        self._bar: Any = None
        self._redirected: list[tuple[logging.StreamHandler, TextIO]] = []
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, initial=initial, dynamic_ncols=True,
                             file=sys.stderr)
            # log records to a terminal are written above the bar while it is shown (undone by close)
            for handler in logging.getLogger().handlers:
                if (isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
                        and _isatty(handler.stream)):
                    self._redirected.append((handler, handler.setStream(_AboveTheBar(handler.stream))))

    def rate(self) -> float:
        """Items (or steps) per second since the loop started."""
        elapsed = self.clock() - self.start
        count = self.items if self.rate_unit else self.done - self.initial
        return count / elapsed if elapsed > 0 else math.nan

    def eta(self) -> float:
        """Seconds left at the mean pace so far; NaN when the total is unknown or nothing is done yet."""
        if self.total is None or self.done <= self.initial:
            return math.nan
        elapsed = self.clock() - self.start
        return elapsed / (self.done - self.initial) * max(0.0, self.total - self.done)

    def _stats_text(self) -> str:
        values = self.stats() if self.stats is not None else {}
        return ", ".join(f"{name} {value:.2f}" for name, value in values.items())

    def _rate_text(self) -> str:
        rate, unit = self.rate(), self.rate_unit or self.unit
        return f"{rate:.2f} {unit}/s" if math.isfinite(rate) else f"? {unit}/s"

    def line(self) -> str:
        """The progress line: ``{desc}: done/total unit (pct%), rate, elapsed, ETA, stats``."""
        if self.total:
            count = f"{_number(self.done)}/{_number(self.total)} {self.unit} ({100.0 * self.done / self.total:.0f}%)"
        else:
            count = f"{_number(self.done)} {self.unit}"
        parts = [count, self._rate_text(), f"elapsed {format_duration(self.clock() - self.start)}"]
        if self.total is not None:
            parts.append(f"ETA {format_duration(self.eta())}")
        stats = self._stats_text()
        if stats:
            parts.append(stats)
        return f"{self.desc}: " + ", ".join(parts)

    def update(self, steps: float = 1, *, items: Optional[float] = None) -> None:
        """``steps`` more steps done (and ``items`` more items, for the rate); reports when it is due."""
        self.done += steps
        self.items += items if items is not None else 0
        if self.mode == "off":
            return
        now = self.clock()
        if self.mode == "bar":
            if now - self._last_report >= BAR_STATS_INTERVAL or self.done == self.total:
                self._last_report = now
                postfix = ", ".join(p for p in (self._rate_text() if self.rate_unit else "", self._stats_text()) if p)
                self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(steps)
        elif now - self._last_report >= self.interval:
            self._last_report = now
            self.lines_written += 1
            logger.info(self.line())

    def close(self) -> None:
        """Remove the bar (kept with ``leave``) and give the log handlers their streams back."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        for handler, stream in reversed(self._redirected):
            handler.setStream(stream)
        self._redirected = []

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(iterable: Iterable[T], progress: Progress, items: Optional[Callable[[T], float]] = None) -> Iterator[T]:
    """Yield the elements of ``iterable``, counting one step of ``progress`` (and ``items(element)`` items) when
    the loop asks for the next one, i.e. once the element's work is done; ``progress`` is closed at the end."""
    try:
        for element in iterable:
            yield element
            progress.update(items=items(element) if items is not None else None)
    finally:
        progress.close()
