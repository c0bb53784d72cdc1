"""Train IMR-HSNet on PASCAL-5i or COCO-20i (the released protocol), resumable, on CPU, GPUs or torchrun.

    python train.py --backbone resnet50 --fold 0 --benchmark pascal --lr 4e-4 --bsz 40 --stage 2 \\
        --logpath my_run --traincampath ../Datasets_HSN/CAM_VOC_Train/ --valcampath ../Datasets_HSN/CAM_VOC_Val/
    python train.py ... --logpath my_run --resume          # continue from logs/my_run.log/last.pt
    torchrun --nproc_per_node 4 train.py ...               # DistributedDataParallel (--bsz is the global batch)

Per epoch: a training pass over the training episodes (new random supports each epoch) and a validation
pass over ``--nepisodes`` episodes drawn with seed 0 (the same every epoch); TensorBoard scalars with the
released tags; ``best_model.pt`` when the validation mIoU improves; ``last.pt`` every epoch.
"""
from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from common import checkpoint as ckpt
from common.args import args_to_json, parse_args, resolve_run_dir
from common.device import resolve_device
from common.distributed import (EpisodeSampler, broadcast_object, cleanup, init_distributed, local_batch_size,
                                seed_for)
from common.engine import NonFiniteLossError, train_epoch, validate_epoch
from common.evaluation import IoUMeter
from common.io import atomic_write_text
from common.logger import TensorBoardWriter, log_args, log_params, setup_logging
from common.seed import fix_randseed
from common.vis import batch_panels

logger = logging.getLogger("train")

# Run settings a resumed run should not change silently.
RESUME_CHECKED = ("benchmark", "fold", "backbone", "stage", "img_size", "masking", "bsz", "lr", "nepisodes")


def wrap_model(model: nn.Module, device: torch.device, distributed: bool) -> nn.Module:
    """DDP under torchrun, DataParallel when several GPUs are visible (as released), else the model."""
    if distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if device.type == "cuda" and torch.cuda.device_count() > 1:
        return nn.DataParallel(model)
    return model


def build_datasets(args: argparse.Namespace) -> tuple[Any, Any]:
    """The training episodes (random supports) and the validation episodes (``--nepisodes``, seed 0)."""
    from data.dataset import build_dataset, check_cams_exist

    common = dict(datapath=args.datapath, fold=args.fold, shot=1, img_size=args.img_size,
                  cam_train_path=args.traincampath, cam_val_path=args.valcampath, splitpath=args.splitpath,
                  use_original_imgsize=False, nepisodes=args.nepisodes)
    trn = build_dataset(args.benchmark, split="trn", seed=args.seed, **common)
    val = build_dataset(args.benchmark, split="val", seed=0, **common)
    check_cams_exist(trn)
    check_cams_exist(val)
    return trn, val


def main(args: argparse.Namespace, *, loss_hook: Optional[Callable] = None,
         after_epoch: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Train; returns ``{"status": "finished" | "nonfinite_loss", "best_miou", "epochs", "run_dir"}``.

    ``loss_hook`` and ``after_epoch`` are test seams (inject a loss, simulate a crash after an epoch).
    """
    from data.dataset import build_dataloader
    from model import build_model

    device = resolve_device(args.device)
    info, device = init_distributed(device)
    try:
        run_dir = Path(str(broadcast_object(str(resolve_run_dir(args.logpath, training=True)))))
        bsz = local_batch_size(args.bsz, info)
        if info.is_main and not args.resume and (run_dir / ckpt.LAST_NAME).exists():
            raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it, "
                                  "or choose another --logpath")
        setup_logging(run_dir, rank=info.rank)

        state = ckpt.load_last(run_dir) if args.resume else None
        if state is not None:
            stored = state["args"]
            if args.seed is None:
                args.seed = stored.get("seed")
            for key in RESUME_CHECKED:
                if key in stored and stored[key] != getattr(args, key):
                    logger.warning("--resume: %s was %r, now %r", key, stored[key], getattr(args, key))
        if args.seed is None:
            args.seed = int(broadcast_object(int(random.random() * 1e5)))  # as released, but recorded
        if info.is_main:
            name = "args.json" if state is None else f"args_resume_epoch{state['epoch'] + 1:03d}.json"
            atomic_write_text(args_to_json(args), run_dir / name)
        log_args(logger, vars(args))
        logger.info("Run folder: %s | device: %s | ranks: %d | CUDA devices: %d", run_dir, device,
                    info.world_size, torch.cuda.device_count())

        fix_randseed(args.seed)
        model = build_model(args.backbone, backbone_weights=args.backbone_weights, masking=args.masking,
                            use_original_imgsize=False)
        for param in model.backbone.parameters():  # frozen, as released (features are taken under no_grad)
            param.requires_grad_(False)
        model.to(device)
        log_params(logger, model)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
        use_amp = args.amp and device.type == "cuda"
        if args.amp and not use_amp:
            logger.warning("--amp has no effect on %s (float16 autocast is used on CUDA only)", device)
        scaler = torch.amp.GradScaler("cuda") if use_amp else None

        start_epoch, best_miou = 0, float("-inf")
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start_epoch, best_miou = state["epoch"] + 1, state["best_miou"]
            ckpt.set_rng_state(state["rng"])
            logger.info("Resumed from %s: epoch %d done, best val. mIoU %.2f", run_dir / ckpt.LAST_NAME,
                        state["epoch"], best_miou)
        net = wrap_model(model, device, info.distributed)

        trn_set, val_set = build_datasets(args)
        trn_sampler = EpisodeSampler(len(trn_set), rank=info.rank, world_size=info.world_size, shuffle=True,
                                     pad=True, seed=args.seed)
        val_sampler = EpisodeSampler(len(val_set), rank=info.rank, world_size=info.world_size)
        trn_loader = build_dataloader(trn_set, bsz=bsz, nworker=args.nworker, shuffle=False, seed=args.seed,
                                      sampler=trn_sampler)
        # Validation episodes are the released seed-0 sequence, fixed when the dataset is built.
        val_loader = build_dataloader(val_set, bsz=bsz, nworker=args.nworker, shuffle=False, seed=0,
                                      sampler=val_sampler)

        writer = TensorBoardWriter(run_dir, enabled=info.is_main,
                                   purge_step=start_epoch if state is not None else None)
        status, epoch = "finished", start_epoch - 1
        try:
            for epoch in range(start_epoch, args.niter):
                # A fresh draw of training episodes every epoch (released: fix_randseed(None)), reproducible
                # from --seed so that a resumed run continues exactly where it stopped.
                fix_randseed(seed_for(args.seed, epoch))
                trn_sampler.set_epoch(epoch)
                trn_set.set_epoch(epoch)  # supports of episode i are drawn from (seed, epoch, i)
                trn = train_epoch(net, trn_loader, optimizer, IoUMeter.for_dataset(trn_set, device),
                                  epoch=epoch, stage=args.stage, device=device, amp=use_amp, scaler=scaler,
                                  loss_hook=loss_hook)
                fix_randseed(0)  # validation episodes are the same every epoch
                val = validate_epoch(
                    net, val_loader, IoUMeter.for_dataset(val_set, device), epoch=epoch, stage=args.stage,
                    device=device, amp=use_amp,
                    first_batch_hook=(lambda b, p, e: writer.add_image("val/predictions", batch_panels(b, p), e))
                    if info.is_main else None)
                if info.is_main:
                    if val.miou > best_miou:
                        best_miou = val.miou
                        ckpt.save_best(model, run_dir)
                        logger.info("Model saved @%d w/ val. mIoU: %5.2f.\n", epoch, val.miou)
                    writer.log_epoch(epoch, trn.as_dict(), val.as_dict())
                    ckpt.save_last(run_dir, model=model, optimizer=optimizer, epoch=epoch, best_miou=best_miou,
                                   args=vars(args), scaler=scaler,
                                   extra={"trn": trn.as_dict(), "val": val.as_dict()})
                best_miou = float(broadcast_object(best_miou))
                if after_epoch is not None:
                    after_epoch(epoch)
        except NonFiniteLossError as err:
            status = "nonfinite_loss"
            logger.error("Stopping: %s. The checkpoints in %s are those of the last good epoch (%d).",
                         err, run_dir, err.epoch - 1)
        finally:
            writer.close()
        if status == "finished":
            logger.info("==================== Finished Training ====================")
        return {"status": status, "best_miou": best_miou, "epochs": epoch + 1, "run_dir": run_dir}
    finally:
        cleanup()


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags and train; exit status 1 when the loss became non-finite."""
    args = parse_args("train", argv)
    result = main(args)
    return 0 if result["status"] == "finished" else 1


if __name__ == "__main__":
    sys.exit(cli())
