"""What a person watches a training run by in TensorBoard, beside the released scalars.

:class:`RunWatch` writes, into the run's own events folder (``tbd/runs``, the run ``runs`` in TensorBoard's run
list; step = epoch), under tags of its own (the released ``data/loss``, ``data/miou``, ``data/fb_iou`` are
:meth:`common.logger.TensorBoardWriter.log_epoch`'s and stay as they were): the scalars of :data:`DESCRIPTIONS`
(the learning rate, each pass's seconds and episodes per second, the best validation mIoU, the optimizer steps
the fp16 GradScaler skipped, the peak memory; docs/training.md has the table), the same few validation episodes
every epoch as pictures (``val/episode_NNNN``, :mod:`common.tb_images`), the run's flags as a table when the
session starts (``run/flags``), its status, epochs and final metrics when it ends (``run/final``), and the
HParams of the session: the flags and the end status (:mod:`common.tb_summaries`).

Nothing of it runs inside a training step but a counter of optimizer steps; the validation pass copies the
shown episodes to the CPU when their batch goes by, and the pictures are drawn and written after the pass.
The time all this takes is kept in :attr:`RunWatch.cost_s` (``benchmarks/bench_tensorboard.py`` reports it
against the epoch's time).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch

from common.evaluation import classify_prediction
from common.logger import TensorBoardWriter
from common.tb_images import episode_title, watch_panel
from common.tb_summaries import (hparam_values, image_summary, markdown_table, scalar_summary, session_end_summary,
                                 session_start_summary, text_summary)

logger = logging.getLogger(__name__)

SHOWN_EPISODES = 4
FLAGS_TAG, FINAL_TAG = "run/flags", "run/final"
DESCRIPTIONS = {
    "train/lr": "Learning rate of the epoch (Adam, first parameter group).",
    "train/episodes_per_s": "Training episodes (all ranks) per second of the training pass.",
    "train/epoch_s": "Seconds of the training pass.",
    "val/episodes_per_s": "Validation episodes (all ranks) per second of the validation pass.",
    "val/epoch_s": "Seconds of the validation pass.",
    "val/best_miou": "Best validation mIoU so far (the epoch best_model.pt holds).",
    "train/nonfinite_skipped_steps": "Optimizer steps the fp16 GradScaler skipped for non-finite gradients this "
                                     "epoch (always 0 without --amp: a non-finite loss stops the run).",
    "memory/cuda_peak_allocated_mib": "torch.cuda.max_memory_allocated during the epoch, MiB (rank 0).",
    "memory/cpu_peak_rss_mib": "Peak resident memory of the training process so far, MiB (DataLoader workers "
                               "not counted).",
}


def peak_memory_mib(device: torch.device) -> tuple[str, Optional[float]]:
    """(tag, MiB): on CUDA the peak of ``torch.cuda.max_memory_allocated`` since the last reset; elsewhere the
    process's peak resident set size (``getrusage``; None where the platform does not report it)."""
    if device.type == "cuda":
        return "memory/cuda_peak_allocated_mib", torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # not on Windows
        return "memory/cpu_peak_rss_mib", None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return "memory/cpu_peak_rss_mib", (peak / 2**20 if sys.platform == "darwin" else peak / 2**10) if peak else None


def shown_episode_positions(class_of: Sequence[int], count: int = SHOWN_EPISODES) -> list[int]:
    """Positions (in a rank's validation order, whose episode classes are ``class_of``) of the episodes to show:
    the first episode of each class in turn, up to ``count``, then the next ones in order. The same positions
    every epoch, since validation episodes and their order are fixed."""
    chosen, seen = [], set()
    for position, cls in enumerate(class_of):
        if len(chosen) == count:
            break
        if cls not in seen:
            seen.add(cls)
            chosen.append(position)
    rest = [p for p in range(len(class_of)) if p not in set(chosen)]
    return sorted(chosen + rest[:max(0, count - len(chosen))])


@dataclass
class _Shown:
    """One shown episode as captured during validation (CPU tensors)."""

    support_img: torch.Tensor  # (3, S, S)
    prior: torch.Tensor  # (h, w)
    query_img: torch.Tensor  # (3, S, S)
    query_mask: torch.Tensor  # (H, W)
    pred: torch.Tensor  # (H, W)
    class_id: int
    iou: float  # foreground IoU, percent


class RunWatch:
    """The run's watch summaries (see the module docstring); a no-op object where ``enabled`` is False (ranks
    other than 0), apart from timing passes.

    Args:
        writer: the run's TensorBoard writer (its :meth:`~TensorBoardWriter.add_summary`).
        args: the run's flags (for HParams and the flags table).
        optimizer: its learning rate is logged; its steps are counted (skipped steps).
        device: for the memory tag.
        val_order: the dataset indices of this rank's validation episodes, in loader order.
        val_classes: the class id of each of those episodes; val_batch_size: the loader's batch size.
        class_names: class id -> name, for the captions.
    """

    def __init__(self, writer: TensorBoardWriter, args: argparse.Namespace, optimizer: torch.optim.Optimizer,
                 device: torch.device, *, val_order: Sequence[int], val_classes: Sequence[int], val_batch_size: int,
                 class_names: Mapping[int, str], enabled: bool = True) -> None:
        self.writer, self.args, self.optimizer, self.device = writer, args, optimizer, device
        self.enabled = enabled
        self.class_names = dict(class_names)
        self.cost_s = 0.0  # seconds spent writing and drawing the watch summaries (this session)
        self.seconds: dict[str, float] = {}  # of the current epoch's passes
        self.session_s = 0.0  # of all passes this session
        self._steps = 0
        self._hook: Any = None
        self._shown: dict[int, _Shown] = {}
        self._wanted: dict[int, list[tuple[int, int]]] = {}  # batch index -> [(item in batch, dataset index)]
        self._last: dict[str, Any] = {}
        if not enabled:
            return
        for position in shown_episode_positions(val_classes):
            batch, item = divmod(position, max(1, val_batch_size))
            self._wanted.setdefault(batch, []).append((item, int(val_order[position])))
        self._hook = optimizer.register_step_post_hook(self._count_step)

    def _count_step(self, *_: Any) -> None:
        self._steps += 1

    @contextlib.contextmanager
    def _costed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.cost_s += time.perf_counter() - start

    def _scalar(self, tag: str, value: Optional[float], step: int) -> None:
        if value is not None:
            self.writer.add_summary(scalar_summary(tag, value, DESCRIPTIONS.get(tag, "")), step)

    def start(self, start_epoch: int) -> None:
        """The HParams session start (the flags) and the flags table, at step ``start_epoch``."""
        if not self.enabled:
            return
        with self._costed():
            flags = vars(self.args)
            self.writer.add_summary(session_start_summary(hparam_values(flags), time.time()), start_epoch)
            rows = [(f"--{name.replace('_', '-')}", value) for name, value in sorted(flags.items())]
            self.writer.add_summary(text_summary(FLAGS_TAG, markdown_table(rows)), start_epoch)
            self.writer.flush()

    def begin_epoch(self) -> None:
        """Reset the epoch's counters (optimizer steps, the CUDA memory peak)."""
        self._steps = 0
        self.seconds = {}
        self._shown = {}
        if self.enabled and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    @contextlib.contextmanager
    def timed(self, split: str) -> Iterator[None]:
        """Time a pass (``"train"`` or ``"val"``) for its ``<split>/epoch_s`` and ``<split>/episodes_per_s``."""
        start = time.perf_counter()
        yield
        self.seconds[split] = time.perf_counter() - start
        self.session_s += self.seconds[split]

    def val_batch(self, batch: Mapping[str, Any], pred: torch.Tensor, batch_idx: int) -> None:
        """Validation batch hook (:func:`engine.loops.validate_epoch`): keeps the shown episodes of this batch
        (``pred``: (B, H, W) the predicted 0/1 masks)."""
        wanted = self._wanted.get(batch_idx)
        if not wanted:
            return
        with self._costed():
            area_inter, area_union = classify_prediction(pred, batch)
            for item, index in wanted:
                if item >= pred.shape[0]:
                    continue
                union = float(area_union[1, item])
                self._shown[index] = _Shown(
                    support_img=batch["support_imgs"][item, 0].detach().cpu(),
                    prior=batch["support_cams"][item, 0].detach().cpu(),
                    query_img=batch["query_img"][item].detach().cpu(),
                    query_mask=batch["query_mask"][item].detach().cpu(), pred=pred[item].detach().cpu(),
                    class_id=int(batch["class_id"][item]),
                    iou=100.0 * float(area_inter[1, item]) / union if union > 0 else 100.0)

    def log_epoch(self, epoch: int, trn: Any, val: Any, *, best_miou: float, train_batches: int) -> None:
        """The epoch's watch scalars and pictures, on disk when this returns (before the checkpoint).

        ``trn`` / ``val``: the passes' :class:`engine.loops.PassResult`; ``train_batches``: the training
        batches this rank ran (the optimizer steps it would have taken)."""
        if not self.enabled:
            return
        with self._costed():
            self._scalar("train/lr", float(self.optimizer.param_groups[0]["lr"]), epoch)
            for split, result in (("train", trn), ("val", val)):
                seconds = self.seconds.get(split)
                if seconds:
                    self._scalar(f"{split}/epoch_s", seconds, epoch)
                    self._scalar(f"{split}/episodes_per_s", result.episodes / seconds, epoch)
            self._scalar("val/best_miou", best_miou, epoch)
            self._scalar("train/nonfinite_skipped_steps", max(0, train_batches - self._steps), epoch)
            self._scalar(*peak_memory_mib(self.device), epoch)
            for index, shown in sorted(self._shown.items()):
                name = self.class_names.get(shown.class_id)
                title = episode_title(f"{name} ({shown.class_id})" if name else f"class {shown.class_id}",
                                      shown.iou, index)
                panel = watch_panel(shown.support_img, shown.prior, shown.query_img, shown.query_mask, shown.pred,
                                    title=title)
                self.writer.add_summary(image_summary(f"val/episode_{index:04d}", panel), epoch)
            self.writer.flush()
        self._shown = {}
        self._last = {"epoch": epoch, "trn": trn, "val": val, "best_miou": best_miou}

    def finish(self, status: str, epochs: int) -> None:
        """The final metrics as text and the HParams session end (``status``: ``"finished"``,
        ``"nonfinite_loss"`` or ``"aborted"``), after ``epochs`` finished epochs."""
        if not self.enabled:
            return
        with self._costed():
            step = int(self._last.get("epoch", max(0, epochs - 1)))
            rows: list[tuple[str, Any]] = [("status", status), ("epochs finished", epochs)]
            if self._last:
                rows.append(("best val. mIoU", f"{self._last['best_miou']:.2f}"))
                for split in ("trn", "val"):
                    result = self._last[split]
                    rows += [(f"{split} loss (last epoch)", f"{result.loss:.5f}"),
                             (f"{split} mIoU (last epoch)", f"{result.miou:.2f}"),
                             (f"{split} FB-IoU (last epoch)", f"{result.fb_iou:.2f}")]
            rows.append(("seconds in passes (this session)", f"{self.session_s:.1f}"))
            self.writer.add_summary(text_summary(FINAL_TAG, markdown_table(rows, header=("", "value"))), step)
            self.writer.add_summary(session_end_summary(status, time.time()), step)
            self.writer.flush()

    def close(self) -> None:
        """Stop counting the optimizer's steps (the writer is the caller's to close)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
