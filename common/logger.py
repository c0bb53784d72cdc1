"""Logging for train.py / test.py: a text log next to the checkpoints, and TensorBoard with the released tags.

* :func:`setup_logging` configures the root logger (console on stdout + ``log.txt`` in the run folder); every
  module logs through ``logging.getLogger(__name__)``. Calling it again replaces its own handlers, never
  stacks them. Ranks other than 0 only print warnings and write no file.
* :class:`TensorBoardWriter` writes ``<run>/tbd/runs`` as released: per epoch ``add_scalars`` under
  ``data/loss`` (``trn_loss``, ``val_loss``), ``data/miou`` (``trn_miou``, ``val_miou``) and ``data/fb_iou``
  (``trn_fb_iou``, ``val_fb_iou``), plus a few qualitative prediction images. On resume it writes
  TensorBoard's purge marker into each event folder so an epoch logged before a crash is shown once.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

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
    console = logging.StreamHandler(sys.stdout)
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
    """tensorboardX writer of a run (rank 0); a no-op object elsewhere (``enabled=False``)."""

    def __init__(self, run_dir: Path, *, enabled: bool = True, purge_step: Optional[int] = None) -> None:
        self.enabled = enabled
        self.logdir = run_dir / EVENTS_DIR / "runs"
        self._writer = None
        if not enabled:
            return
        from tensorboardX import SummaryWriter

        if purge_step is not None:
            self._purge_subwriters(purge_step)
        self._writer = SummaryWriter(str(self.logdir), purge_step=purge_step)

    def _purge_subwriters(self, step: int) -> None:
        """Mark events at ``step`` and later as stale in the ``add_scalars`` folders of an earlier session.

        tensorboardX gives ``purge_step`` to the main writer only; ``add_scalars`` writes one folder per tag,
        so each existing one gets the same START marker TensorBoard purges on.
        """
        from tensorboardX.event_file_writer import EventFileWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        for main_tag in SCALAR_TAGS:
            for sub in sorted((self.logdir / main_tag).glob("*")):
                if sub.is_dir():
                    writer = EventFileWriter(str(sub))
                    writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
                    writer.close()

    def log_epoch(self, epoch: int, trn: Mapping[str, float], val: Mapping[str, float]) -> None:
        """The released per-epoch scalars; ``trn``/``val`` hold ``loss``, ``miou`` and ``fb_iou``."""
        if not self.enabled:
            return
        for main_tag, key in SCALAR_TAGS.items():
            self._writer.add_scalars(main_tag, {f"trn_{key}": trn[key], f"val_{key}": val[key]}, epoch)
        self._writer.flush()

    def add_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An (H, W, 3) uint8 image."""
        if self.enabled:
            self._writer.add_image(tag, image, step, dataformats="HWC")

    def flush(self) -> None:
        if self.enabled:
            self._writer.flush()

    def close(self) -> None:
        if self.enabled and self._writer is not None:
            self._writer.close()
            self._writer = None
