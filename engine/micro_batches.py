"""``train.py --micro-bsz M``: a batch of ``--bsz`` episodes computed as ceil(B / M) forward/backward passes and
one optimizer step, so that the released recipe (batch 40 or 20) keeps its step on a smaller GPU.

The learner normalises with GroupNorm (per episode) and the frozen backbone runs in eval mode, so no episode's
output depends on the others of its batch; the batch loss is the mean over its episodes (each stage's cross
entropy averages over episodes and pixels, all of one size). Each micro-batch's loss is weighted by its share of
the batch (n / B, a last smaller one included) before its backward, so the accumulated gradient is the batch's,
up to the order of the sums. Under DDP only the last micro-batch synchronises the gradients (``no_sync``).

``--micro-bsz auto``: on a CPU the whole batch (memory is not the limit there); on CUDA the largest M whose
training step fits, found by trying a step per candidate, largest first, on validation episodes (drawing them
leaves the training draws alone), catching out-of-memory.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Union

import torch
from torch import nn

logger = logging.getLogger(__name__)

MicroBsz = Union[int, str, None]


@dataclass(frozen=True)
class MicroBatchChoice:
    """What ``--micro-bsz`` resolved to: ``size`` episodes per pass (None: the whole batch in one pass) and, for
    ``auto`` on CUDA, the peak memory its probe step reached (what a pass is expected to need)."""

    size: Optional[int]
    step_peak_gib: Optional[float] = None

    def record(self, requested: MicroBsz, batch_size: int) -> dict[str, Any]:
        """The choice as the run records it (``micro_bsz_chosen`` in its arguments file); ``batch_size``: the
        episodes of a batch on this rank (``--bsz`` over the DDP ranks)."""
        per_pass = self.size or batch_size
        return {"requested": requested, "batch_per_rank": batch_size, "episodes_per_pass": per_pass,
                "passes": math.ceil(batch_size / per_pass), "step_peak_gib": self.step_peak_gib}


def micro_batches(batch: Mapping[str, Any], size: Optional[int]) -> Iterator[tuple[dict[str, Any], float]]:
    """``batch`` in slices of ``size`` episodes along the first dimension, each with its share of the batch
    (n / B); the whole batch once, with share 1, when ``size`` is None or not smaller than the batch."""
    total = int(batch["query_img"].shape[0])
    if size is None or size >= total:
        yield dict(batch), 1.0
        return
    for start in range(0, total, size):
        stop = min(start + size, total)
        yield ({key: value[start:stop] if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == total
                else value for key, value in batch.items()}, (stop - start) / total)


def sync_context(model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` for every micro-batch but the last (the gradients are averaged once per step)."""
    if not last and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def candidates(batch_size: int) -> list[int]:
    """The micro-batch sizes worth trying for a batch of ``batch_size``, largest first: each number of passes
    ceil(B / M) once, with the smallest M that gives it."""
    sizes = {math.ceil(batch_size / passes) for passes in range(1, batch_size + 1)}
    return sorted(sizes, reverse=True)


def resolve_micro_bsz(value: MicroBsz, batch_size: int, device: torch.device,
                      try_step: Callable[[int], None]) -> MicroBatchChoice:
    """The micro-batch size to train with: the whole batch (size None) for no ``--micro-bsz`` or ``auto`` on a
    CPU; ``min(M, B)`` for a number; for ``auto`` on CUDA the first of :func:`candidates` for which
    ``try_step(M)`` (one forward/backward of M episodes) raises no out-of-memory error, with that step's peak.

    Raises:
        torch.cuda.OutOfMemoryError: not even one episode fits.
    """
    if value is None:
        return MicroBatchChoice(None)
    if value != "auto":
        return MicroBatchChoice(None if int(value) >= batch_size else int(value))
    if device.type != "cuda":
        logger.info("--micro-bsz auto: the whole batch of %d on %s", batch_size, device)
        return MicroBatchChoice(None)
    for size in candidates(batch_size):
        try:
            torch.cuda.reset_peak_memory_stats(device)
            try_step(size)
        except torch.cuda.OutOfMemoryError:
            logger.info("--micro-bsz auto: %d episodes per pass do not fit", size)
            torch.cuda.empty_cache()
            if size == 1:
                raise
            continue
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        logger.info("--micro-bsz auto: %d episodes per pass (%d passes per batch of %d); a step's peak: %.1f GiB",
                    size, math.ceil(batch_size / size), batch_size, peak)
        return MicroBatchChoice(None if size >= batch_size else size, round(peak, 3))
    raise AssertionError("candidates() ends with 1, which returns or raises")
