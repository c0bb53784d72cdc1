"""The loops: one training epoch, one validation epoch, and the test pass (released semantics).

* Training and validation run the 1-shot forward with masks (the model returns query/support logits and the
  summed stage losses); the batch loss is ``losses.mean()`` (a vector of per-GPU losses under DataParallel,
  a scalar otherwise); the training mIoU/FB-IoU score the query argmax, as released.
* Seeding is the caller's job (train.py re-seeds every training epoch, and seeds 0 before validation).
* A non-finite loss on any rank raises :class:`NonFiniteLossError` *before* the backward pass, so the
  parameters and the checkpoints on disk stay those of the last good step / epoch.
* Metrics are summed over DDP ranks at the end of a pass (:meth:`IoUMeter.all_reduce`).
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import torch
from torch import nn

from common.distributed import all_reduce_flag, unwrap
from common.evaluation import IoUMeter, classify_prediction
from common.progress import Progress, track
from engine.micro_batches import micro_batches, sync_context

logger = logging.getLogger(__name__)

Batch = dict[str, Any]
BatchHook = Callable[[Batch, torch.Tensor, int], None]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training must stop."""

    def __init__(self, epoch: int, batch_idx: int, value: float) -> None:
        super().__init__(f"non-finite loss ({value}) at epoch {epoch}, batch {batch_idx}")
        self.epoch, self.batch_idx, self.value = epoch, batch_idx, value


@dataclass
class PassResult:
    """What one pass over a loader measured (summed over ranks)."""

    loss: float
    miou: float
    fb_iou: float
    episodes: int
    per_class_iou: dict[int, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_device(batch: Mapping[str, Any], device: torch.device) -> Batch:
    """A new dict with every tensor moved to ``device`` (names and sizes stay as they are)."""
    non_blocking = device.type == "cuda"
    return {key: value.to(device, non_blocking=non_blocking) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()}


def autocast(device: torch.device, amp: Union[bool, str, None]):
    """Autocast on CUDA (``--amp``): ``"bf16"`` to bfloat16, ``"fp16"`` or ``True`` to float16; a null context
    when ``amp`` is off or the device is not CUDA."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
    return contextlib.nullcontext()


def forward_1shot(model: nn.Module, batch: Batch, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training/validation forward: returns (query logits (B, 2, H, W), batch loss scalar)."""
    logit_q, _logit_s, losses = model(
        query_img=batch["query_img"], support_img=batch["support_imgs"][:, 0],
        support_cam=batch["support_cams"][:, 0], query_cam=batch["query_cam"],
        query_mask=batch["query_mask"], support_mask=batch["support_masks"][:, 0], stage=stage)
    return logit_q, losses.mean()


def _progress(iterable: Iterable[Batch], total: int, desc: str, enabled: bool, meter: IoUMeter,
              with_loss: bool) -> Iterable[Batch]:
    """The batches of ``iterable``, with progress reported (:mod:`common.progress`: a bar on a terminal, a line
    every 30 s otherwise) in episodes per second, with the running loss and mIoU of this rank's share."""
    def stats() -> dict[str, float]:
        values = {"loss": meter.avg_loss} if with_loss and meter.loss_count > 0 else {}
        values["mIoU"] = meter.compute_iou()[0]
        return values

    progress = Progress(total, desc, unit="batches", rate_unit="episodes", stats=stats, enabled=enabled)
    return track(iterable, progress, items=lambda batch: len(batch["class_id"]))


def _log_progress(meter: IoUMeter, batch_idx: int, total: int, epoch: int, with_loss: bool) -> None:
    """The released ``write_process`` line (local to this rank's share)."""
    miou, fb_iou = meter.compute_iou()
    msg = f"[Epoch: {epoch:02d}] " if epoch >= 0 else ""
    msg += f"[Batch: {batch_idx + 1:04d}/{total:04d}] "
    if with_loss and meter.last_loss is not None:
        msg += f"L: {meter.last_loss:6.5f}  Avg L: {meter.avg_loss:6.5f}  "
    msg += f"mIoU: {miou:5.2f}  |  FB-IoU: {fb_iou:5.2f}"
    logger.info(msg)


def _finish(meter: IoUMeter, split: str, epoch: int, with_loss: bool = True) -> PassResult:
    meter.all_reduce()
    miou, fb_iou = meter.compute_iou()
    msg = f"\n*** {split} [@Epoch {epoch:02d}] "
    if with_loss:
        msg += f"Avg L: {meter.avg_loss:6.5f}  "
    logger.info(msg + f"mIoU: {miou:5.2f}   FB-IoU: {fb_iou:5.2f}   ***\n")
    return PassResult(loss=meter.avg_loss, miou=miou, fb_iou=fb_iou, episodes=int(meter.episodes),
                      per_class_iou=meter.per_class_iou())


def train_epoch(model: nn.Module, loader: Iterable[Batch], optimizer: torch.optim.Optimizer, meter: IoUMeter, *,
                epoch: int, stage: int, device: torch.device, amp: Union[bool, str, None] = False,
                scaler: Optional[Any] = None, micro_bsz: Optional[int] = None,
                log_every: int = 50, progress: bool = True,
                loss_hook: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None) -> PassResult:
    """One training epoch (model in ``train_mode``: learner trains, backbone BN frozen).

    ``micro_bsz``: each batch as passes of at most that many episodes, one optimizer step per batch
    (:mod:`engine.micro_batches`); the logged loss and metrics are the whole batch's.
    ``loss_hook(loss, batch_idx) -> loss`` lets tests inject a loss (e.g. NaN) without touching the model.
    """
    unwrap(model).train_mode()
    total = len(loader)  # type: ignore[arg-type]
    for idx, batch in enumerate(_progress(loader, total, f"[Epoch: {epoch:02d}] train", progress, meter, True)):
        batch = to_device(batch, device)
        optimizer.zero_grad(set_to_none=True)
        parts = list(micro_batches(batch, micro_bsz))
        logits, losses = [], []
        for number, (part, share) in enumerate(parts):
            with sync_context(model, last=number == len(parts) - 1):
                with autocast(device, amp):
                    logit_q, loss = forward_1shot(model, part, stage)
                if loss_hook is not None:
                    loss = loss_hook(loss, idx)
                bad = not bool(torch.isfinite(loss.detach()).all())
                if all_reduce_flag(bad, device):
                    raise NonFiniteLossError(epoch, idx, float(loss.detach()))
                weighted = loss * share if len(parts) > 1 else loss
                (scaler.scale(weighted) if scaler is not None else weighted).backward()
            logits.append(logit_q.detach())
            losses.append(loss.detach() * share if len(parts) > 1 else loss.detach())
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        with torch.no_grad():
            pred = torch.cat(logits).argmax(dim=1)
            area_inter, area_union = classify_prediction(pred, batch)
            meter.update(area_inter, area_union, batch["class_id"], sum(losses[1:], losses[0]))
        if log_every and idx % log_every == 0:
            _log_progress(meter, idx, total, epoch, with_loss=True)
    return _finish(meter, "Training", epoch)


@torch.no_grad()
def validate_epoch(model: nn.Module, loader: Iterable[Batch], meter: IoUMeter, *, epoch: int, stage: int,
                   device: torch.device, amp: Union[bool, str, None] = False, log_every: int = 50,
                   progress: bool = True, batch_hook: Optional[BatchHook] = None) -> PassResult:
    """One validation pass (1-shot forward with masks, loss reported as released).

    ``batch_hook(batch, pred, batch_idx)`` is called per batch with the predicted (B, H, W) masks (the run's
    TensorBoard pictures).

    ``model`` may be wrapped: DataParallel is used as is (its forward splits the batch over GPUs); a DDP
    wrapper is bypassed, since every rank scores its own shard and must not synchronise per step.
    """
    net = model if isinstance(model, nn.DataParallel) else unwrap(model)
    unwrap(model).eval()
    total = len(loader)  # type: ignore[arg-type]
    for idx, batch in enumerate(_progress(loader, total, f"[Epoch: {epoch:02d}] val", progress, meter, True)):
        batch = to_device(batch, device)
        with autocast(device, amp):
            logit_q, loss = forward_1shot(net, batch, stage)
        pred = logit_q.argmax(dim=1)
        area_inter, area_union = classify_prediction(pred, batch)
        meter.update(area_inter, area_union, batch["class_id"], loss.float())
        if batch_hook is not None:
            batch_hook(batch, pred, idx)
        if log_every and idx % log_every == 0:
            _log_progress(meter, idx, total, epoch, with_loss=True)
    result = _finish(meter, "Validation", epoch)
    if not math.isfinite(result.loss):
        logger.warning("validation loss is %s at epoch %d", result.loss, epoch)
    return result


@torch.no_grad()
def test_pass(model: nn.Module, loader: Iterable[Batch], meter: IoUMeter, *, nshot: int, stage: int,
              device: torch.device, amp: Union[bool, str, None] = False, log_every: int = 1, progress: bool = True,
              batch_hook: Optional[Callable[[Batch, torch.Tensor, int, torch.Tensor], None]] = None,
              score_hook: Optional[Callable[[Batch, torch.Tensor, torch.Tensor], None]] = None) -> PassResult:
    """The released test loop: ``predict_mask_nshot`` (n-shot vote), scored against the query mask.

    ``batch_hook(batch, pred, batch_idx, fg_iou)`` is called per batch (``--visualize``);
    ``score_hook(batch, area_inter, area_union)`` gets each batch's (2, B) counts (the per-episode records).
    """
    net = unwrap(model)
    net.eval()
    total = len(loader)  # type: ignore[arg-type]
    for idx, batch in enumerate(_progress(loader, total, "test", progress, meter, False)):
        batch = to_device(batch, device)
        with autocast(device, amp):
            pred = net.predict_mask_nshot(batch, nshot=nshot, stage=stage)
        if pred.shape != batch["query_mask"].shape:
            raise RuntimeError(f"prediction {tuple(pred.shape)} vs query_mask {tuple(batch['query_mask'].shape)}")
        area_inter, area_union = classify_prediction(pred, batch)
        meter.update(area_inter, area_union, batch["class_id"], None)
        if score_hook is not None:
            score_hook(batch, area_inter, area_union)
        if batch_hook is not None:
            batch_hook(batch, pred, idx, area_inter[1].float() / area_union[1].float())
        if log_every and idx % log_every == 0:
            _log_progress(meter, idx, total, -1, with_loss=False)
    return _finish(meter, "Test", 0, with_loss=False)
