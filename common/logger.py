"""Logging for train.py / test.py: a text log next to the checkpoints, and TensorBoard with the released tags.

* :func:`setup_logging` configures the root logger (console on stdout + ``log.txt`` in the run folder); every
  module logs through ``logging.getLogger(__name__)``. Calling it again replaces its own handlers, never
  stacks them. Ranks other than 0 only print warnings and write no file.
* :class:`TensorBoardWriter` writes ``<run>/tbd/runs`` as released: per epoch ``add_scalars`` under
  ``data/loss`` (``trn_loss``, ``val_loss``), ``data/miou`` (``trn_miou``, ``val_miou``) and ``data/fb_iou``
  (``trn_fb_iou``, ``val_fb_iou``). On resume it writes TensorBoard's purge marker into each event folder so an
  epoch logged before a crash is shown once. What a person watches a run by (learning rate, throughput,
  memory, HParams, captioned validation pictures: ``engine/run_watch.py``) goes through
  :meth:`TensorBoardWriter.add_summary` into ``tbd/runs`` itself, under tags of its own.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from common.console import ConsoleHandler
from common.io import refused_writes_reported

_HANDLER_TAG = "_imrhsnet_handler"
EVENTS_DIR = "tbd"  # the run folder's TensorBoard events, as released (``tbd/runs``)
SCALAR_TAGS = {"data/loss": "loss", "data/miou": "miou", "data/fb_iou": "fb_iou"}


def setup_logging(run_dir: Optional[Path] = None, *, rank: int = 0, filename: str = "log.txt",
                  level: int = logging.INFO) -> logging.Logger:
    """Send log records to stdout and (rank 0, when ``run_dir`` is given) to ``run_dir/filename``.

    Safe to call twice: the handlers this function added before are closed and replaced. The file is
    appended to, so a resumed run keeps the log of its first part.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_TAG, False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    formatter = logging.Formatter("%(message)s")
    console = ConsoleHandler("stdout")
    console.setLevel(level if rank == 0 else logging.WARNING)
    handlers: list[logging.Handler] = [console]
    if run_dir is not None and rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(run_dir / filename, mode="a", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _HANDLER_TAG, True)
        root.addHandler(handler)
    return root


def log_args(logger: logging.Logger, args: Mapping[str, Any]) -> None:
    """The released argument table."""
    logger.info("\n:=========== Few-shot Seg. with IMR-HSNet ===========")
    for key, value in args.items():
        logger.info("| %20s: %-24s", key, str(value))
    logger.info(":====================================================\n")


def log_params(logger: logging.Logger, model: torch.nn.Module) -> None:
    """Parameter counts as released: backbone (without its classifier/fc) and the rest ("learnable")."""
    backbone, learner = 0, 0
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "module":
            parts = parts[1:]
        if parts[0] == "backbone":
            if len(parts) > 1 and parts[1] in ("classifier", "fc"):  # unused by HSNet
                continue
            backbone += value.numel()
        else:
            learner += value.numel()
    logger.info("Backbone # param.: %d", backbone)
    logger.info("Learnable # param.: %d", learner)
    logger.info("Total # param.: %d", backbone + learner)


class TensorBoardWriter:
    """The run's TensorBoard events (rank 0); a no-op object elsewhere (``enabled=False``).

    The files are tensorboardX's (the released layout: ``add_scalars``-style folders per tag under
    ``tbd/runs``), written synchronously: tensorboardX's ``SummaryWriter`` queues events for a background
    thread and its ``flush`` does not wait for that queue, so a process killed right after an epoch's
    checkpoint lost that epoch's scalars for good. Here an epoch's events are on disk when
    :meth:`log_epoch` returns, before the checkpoint is written.
    """

    def __init__(self, run_dir: Path, *, enabled: bool = True, purge_step: Optional[int] = None) -> None:
        self.enabled = enabled
        self.logdir = run_dir / EVENTS_DIR / "runs"
        self._files: dict[Path, Any] = {}
        if not enabled:
            return
        # tensorboardX names event files by the second and the host only and opens them with "wb": a second
        # session writing the same folder within one second would empty the first one's file. The session's
        # start in nanoseconds (fixed width) keeps the names apart and in the order the sessions started.
        self._suffix = f".{time.time_ns()}.{os.getpid()}"
        if purge_step is not None:
            # TensorBoard drops earlier events at or after a START marker's step of the same folder: one per
            # folder of the earlier sessions, first in the file this session's events then go to
            folders = [self.logdir] + [sub for tag in SCALAR_TAGS for sub in sorted((self.logdir / tag).glob("*"))
                                       if sub.is_dir()]
            from tensorboardX.proto.event_pb2 import Event, SessionLog

            with refused_writes_reported(self.logdir):
                for folder in folders:
                    self._write(folder, Event(wall_time=time.time(), step=purge_step,
                                              session_log=SessionLog(status=SessionLog.START)))
                self.flush()

    def _write(self, folder: Path, event: Any) -> None:
        from tensorboardX.event_file_writer import EventsWriter

        if folder not in self._files:
            folder.mkdir(parents=True, exist_ok=True)
            self._files[folder] = EventsWriter(str(folder / "events"), self._suffix)
        self._files[folder].write_event(event)

    def log_epoch(self, epoch: int, trn: Mapping[str, float], val: Mapping[str, float]) -> None:
        """The released per-epoch scalars; ``trn``/``val`` hold ``loss``, ``miou`` and ``fb_iou``. On disk when
        this returns."""
        if not self.enabled:
            return
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        with refused_writes_reported(self.logdir):
            for main_tag, key in SCALAR_TAGS.items():
                for split, values in (("trn", trn), ("val", val)):
                    # as SummaryWriter.add_scalars: folder <main_tag>/<split>_<key>, the value tagged <main_tag>
                    self._write(self.logdir / main_tag / f"{split}_{key}",
                                Event(wall_time=time.time(), step=epoch, summary=scalar(main_tag, values[key])))
            self.flush()

    def add_summary(self, summary: Any, step: int) -> None:
        """A tensorboardX ``Summary`` proto (e.g. from :mod:`common.tb_summaries`) at ``step``, into the run's own
        events folder (``tbd/runs``, which a resume's purge marker covers); on disk after :meth:`flush`."""
        if self.enabled:
            from tensorboardX.proto.event_pb2 import Event

            with refused_writes_reported(self.logdir):
                self._write(self.logdir, Event(wall_time=time.time(), step=step, summary=summary))

    def flush(self) -> None:
        """Write everything logged so far to disk."""
        for events in self._files.values():
            events.flush()

    def close(self) -> None:
        """Flush and close the event files."""
        for events in self._files.values():
            events.close()
        self._files = {}
