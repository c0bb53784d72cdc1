"""Train IMR-HSNet on PASCAL-5i, COCO-20i (the released protocol) or FSS-1000 (HSNet's), resumable, on CPU, GPUs
or torchrun.

    python train.py --backbone resnet50 --fold 0 --benchmark pascal --lr 4e-4 --bsz 40 --stage 2 \\
        --logpath my_run --traincampath ../Datasets_HSN/CAM_VOC_Train/ --valcampath ../Datasets_HSN/CAM_VOC_Val/
    python train.py ... --logpath my_run --resume          # continue from logs/my_run.log/last.pt
    torchrun --nproc_per_node 4 train.py ...               # DistributedDataParallel (--bsz is the global batch)

Per epoch: a training pass over the training episodes (new random supports each epoch) and a validation
pass over ``--nepisodes`` episodes drawn with seed 0 (the same every epoch; default 1000, or every FSS-1000
val image once); TensorBoard scalars with the released tags; ``best_model.pt`` when the validation mIoU
improves; ``last.pt`` every epoch.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Optional, Sequence

import torch

from common.cli import run_cli
from common.device import configure_tf32, resolve_device
from common.distributed import cleanup, init_distributed, local_batch_size
from common.logger import setup_logging
from common.seed import fix_randseed
from engine import training
from engine.args import parse_args
from engine.run_checkpoint import LAST_NAME
from engine.run_folder import removed_on_bad_input


def main(args: argparse.Namespace, *, loss_hook: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None,
         after_epoch: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Train; returns ``{"status": "finished" | "nonfinite_loss", "best_miou", "epochs", "run_dir"}``.

    ``loss_hook`` and ``after_epoch`` are test seams (inject a loss, simulate a crash after an epoch).
    """
    device = resolve_device(args.device)
    configure_tf32(args.tf32)
    info, device = init_distributed(device)
    try:
        bsz = local_batch_size(args.bsz, info)
        run = training.open_run_folder(args, info)
        with removed_on_bad_input(run, info, finished=LAST_NAME):
            state = training.load_resume_state(args, run.path, info)
            setup_logging(run.path, rank=info.rank)
            training.decide_seed(args, run.path, info)
            training.record_arguments(args, run.path, state, info, device)
            fix_randseed(args.seed)  # the model's initial weights
            trainer = training.build_trainer(args, device, state, info.distributed)
            loaders = training.build_loaders(args, info, bsz)
            return training.run_epochs(args, trainer, loaders, run.path, info, device, loss_hook=loss_hook,
                                       after_epoch=after_epoch)
    finally:
        cleanup()


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags and train; exit status 1 when the loss became non-finite, 2 on bad input."""
    def run() -> int:
        return 0 if main(parse_args("train", argv))["status"] == "finished" else 1

    return run_cli(run, "train.py")


if __name__ == "__main__":
    sys.exit(cli())
