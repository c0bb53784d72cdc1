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
from engine import training
from engine.args import parse_args


def main(args: argparse.Namespace, *, loss_hook: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None,
         after_epoch: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Train; returns ``{"status": "finished" | "nonfinite_loss", "best_miou", "epochs", "run_dir"}``
    (:func:`engine.training.train`, which the cluster jobs of ``launch.py`` call too).

    ``loss_hook`` and ``after_epoch`` are test seams (inject a loss, simulate a crash after an epoch).
    """
    return training.train(args, loss_hook=loss_hook, after_epoch=after_epoch)


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags and train; exit status 1 when the loss became non-finite, 2 on bad input."""
    return run_cli(lambda: 0 if main(parse_args("train", argv))["status"] == "finished" else 1, "train.py")


if __name__ == "__main__":
    sys.exit(cli())
