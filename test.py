"""Test a trained IMR-HSNet (1-shot or n-shot) with the released protocol and print the released final line.

    python test.py --backbone resnet50 --fold 0 --benchmark pascal --nshot 1 --load logs/my_run.log/best_model.pt \\
        --valcampath ../Datasets_HSN/CAM_VOC_Val/
    -> ... Fold 0 mIoU: xx.xx 	 FB-IoU: yy.yy

``--nepisodes`` episodes (released: 1000; FSS-1000: every test image once, 2400, as HSNet) are drawn with
``--seed`` (released: 0); mIoU is the mean foreground IoU over the fold's classes (FSS-1000: the test classes)
and FB-IoU the mean of foreground and background IoU (PASCAL ignores the 255 boundary). The numbers and the
per-class IoU go to ``results.json`` in the run folder.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from common.cli import run_cli
from common.device import configure_tf32, resolve_device
from common.distributed import EpisodeSampler, broadcast_object, cleanup, init_distributed, local_batch_size
from common.evaluation import IoUMeter
from common.io import atomic_write_text
from common.logger import log_args, log_params, setup_logging
from common.seed import fix_randseed
from common.vis import Visualizer
from engine.args import args_to_json, parse_args, resolve_run_dir
from engine.loops import test_pass

logger = logging.getLogger("test")
RESULTS_NAME = "results.json"


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Test ``args.load``; returns the numbers written to ``results.json``."""
    from data.dataset import build_dataloader, build_dataset, check_cams_exist
    from model import build_model
    from model.checkpoint import load_model_state

    device = resolve_device(args.device)
    configure_tf32(args.tf32)
    info, device = init_distributed(device)
    try:
        run_dir = Path(str(broadcast_object(str(resolve_run_dir(args.logpath, training=False, load=args.load)))))
        bsz = local_batch_size(args.bsz, info)
        setup_logging(run_dir, rank=info.rank)
        if info.is_main:
            atomic_write_text(args_to_json(args), run_dir / "args.json")
        log_args(logger, vars(args))
        logger.info("Run folder: %s | device: %s | ranks: %d", run_dir, device, info.world_size)

        model = build_model(args.backbone, backbone_weights=args.backbone_weights, masking=args.masking,
                            use_original_imgsize=args.use_original_imgsize)
        load_model_state(model, args.load)
        model.to(device).eval()
        if args.compile:
            model.compile_learner()
        log_params(logger, model)

        dataset = build_dataset(args.benchmark, datapath=args.datapath, fold=args.fold, split="test",
                                shot=args.nshot, img_size=args.img_size, cam_train_path=args.traincampath,
                                cam_val_path=args.valcampath, splitpath=args.splitpath,
                                use_original_imgsize=args.use_original_imgsize, nepisodes=args.nepisodes,
                                seed=args.seed)
        check_cams_exist(dataset)
        sampler = EpisodeSampler(len(dataset), rank=info.rank, world_size=info.world_size)
        # The episodes are the released sequence for --seed, fixed when the dataset is built.
        loader = build_dataloader(dataset, bsz=bsz, nworker=args.nworker, shuffle=False, seed=args.seed,
                                  sampler=sampler)

        visualizer = Visualizer(run_dir / "vis") if args.visualize and info.is_main else None
        hook = (lambda batch, pred, idx, iou: visualizer.save_batch(batch, pred, idx, iou)) if visualizer else None
        fix_randseed(args.seed)
        result = test_pass(model, loader, IoUMeter.for_dataset(dataset, device), nshot=args.nshot,
                           stage=args.stage, device=device, amp=args.amp, batch_hook=hook)
        logger.info("Fold %d mIoU: %5.2f \t FB-IoU: %5.2f", args.fold, result.miou, result.fb_iou)
        logger.info("==================== Finished Testing ====================")
        numbers = {"benchmark": args.benchmark, "fold": args.fold, "nshot": args.nshot, "backbone": args.backbone,
                   "stage": args.stage, "load": args.load, "miou": result.miou, "fb_iou": result.fb_iou,
                   "episodes": result.episodes,
                   "per_class_iou": {str(k): v for k, v in result.per_class_iou.items()}}
        if info.is_main:
            atomic_write_text(json.dumps(numbers, indent=2) + "\n", run_dir / RESULTS_NAME)
        numbers["run_dir"] = str(run_dir)
        return numbers
    finally:
        cleanup()


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags and test; exit status 2 on bad input."""
    def run() -> None:
        main(parse_args("test", argv))

    return run_cli(run, "test.py")


if __name__ == "__main__":
    sys.exit(cli())
