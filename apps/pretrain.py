"""Backbone pretraining without a download: a classifier over one fold's *training* classes of the synthetic benchmark.

A randomly initialised backbone cannot tell the synthetic classes apart, so the few-shot head cannot learn
*which* object the support shows. ``make demo`` therefore first trains the backbone it will freeze:

* images are rendered afresh by :func:`data.synthetic.render_image` (never the benchmark's files), and every
  object in them, distractors included, belongs to the fold's training classes (PASCAL fold 0: classes
  5..19); the fold's test classes are never drawn;
* the backbone's deepest feature (the one HSNet correlates last) goes through a ReLU, a global average pool
  and a linear layer over those classes; the whole backbone and that layer are trained with cross-entropy on
  the largest object's class (AdamW, one-cycle schedule, random horizontal flips);
* the linear layer is then dropped, and the backbone is saved as an ordinary torchvision state dict (every
  key and shape as torchvision's; ``fc`` / ``classifier`` keep their random initialisation) that
  ``--backbone-weights FILE`` loads strictly and the few-shot training freezes, as the method requires.

    python -m apps.pretrain OUT.pth --backbone resnet50 --benchmark pascal --fold 0

writes ``OUT.pth`` and ``OUT.json`` (settings, per-epoch loss and accuracy, the accuracy on held-out rendered
images of the same classes, and the seconds spent).
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from common.cli import ArgumentParser, run_cli
from common.console import ensure_console_logging
from common.device import resolve_device
from common.flags import add_flags
from common.io import OutputFolderError, atomic_torch_save, atomic_write_text, prepare_output_folder
from data import synthetic
from data.benchmarks import FOLD_BENCHMARKS, NCLASS, NFOLDS, fold_classes
from data.readers import ImageTransform
from model.backbone import BACKBONES, get_spec

logger = logging.getLogger(__name__)
# Image seeds are [seed, 7, stream, class, k]: five words, so they never equal the benchmark's image seeds
# (four words) or the training episodes' (three); numpy would pad a shorter seed with zeros.
_RNG_CODE = 7
_TRAIN_STREAM, _HELDOUT_STREAM = 1, 2


@dataclass(frozen=True)
class PretrainConfig:
    """What the pretraining does (all of it is recorded in the report)."""

    backbone: str = "resnet50"
    benchmark: str = "pascal"
    fold: int = 0
    seed: int = 0
    img_size: int = 96
    images_per_class: int = 40
    heldout_per_class: int = 10
    epochs: int = 4
    bsz: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_distractors: int = synthetic.MAX_DISTRACTORS
    device: str = "cpu"


def training_classes(benchmark: str, fold: int) -> list[int]:
    """The 0-based classes ``train.py`` sees for ``fold``: all but the fold's test classes."""
    test_classes = set(fold_classes(benchmark, fold))
    return [c for c in range(NCLASS[benchmark]) if c not in test_classes]


def render_images(classes: Sequence[int], per_class: int, *, img_size: int, seed: int, stream: int,
                  max_distractors: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` fresh images per class, JPEG round-tripped as the benchmark's files are and transformed
    as the few-shot loaders transform them. Returns images (N, 3, S, S) and labels (N,) indexing ``classes``."""
    transform = ImageTransform(img_size)
    images, labels = [], []
    for label, cls in enumerate(classes):
        for k in range(per_class):
            rng = np.random.default_rng([seed, _RNG_CODE, stream, cls, k])
            image, _listed = synthetic.render_image(rng, cls, classes, max_distractors=max_distractors)
            buffer = io.BytesIO()
            Image.fromarray(image, "RGB").save(buffer, format="JPEG", quality=synthetic.JPEG_QUALITY, subsampling=2)
            buffer.seek(0)
            images.append(transform(Image.open(buffer).convert("RGB")))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


class PooledClassifier(nn.Module):
    """The backbone's deepest HSNet feature -> ReLU -> global average pool -> linear over ``nclass``."""

    def __init__(self, backbone_name: str, backbone: nn.Module, nclass: int) -> None:
        super().__init__()
        self.extract = get_spec(backbone_name).extract
        self.backbone = backbone
        with torch.no_grad():
            channels = self.extract(backbone.eval(), torch.zeros(1, 3, 64, 64))[-1].shape[1]
        self.head = nn.Linear(channels, nclass)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised images -> (B, nclass) logits."""
        feature = torch.relu(self.extract(self.backbone, img)[-1])
        return self.head(feature.mean(dim=(2, 3)))


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, bsz: int = 64) -> float:
    """Top-1 accuracy (%) of ``model`` on ``images`` (moved to the model's device batch by batch)."""
    model.eval()
    device = next(model.parameters()).device
    correct = sum(int((model(images[i:i + bsz].to(device)).argmax(1).cpu() == labels[i:i + bsz]).sum())
                  for i in range(0, len(images), bsz))
    return 100.0 * correct / len(images)


def pretrain_backbone(config: PretrainConfig) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``config.backbone`` (torchvision, random init seeded by ``config.seed``) to classify the training
    classes of ``config.fold``. Returns the backbone (eval mode, the pretraining head dropped) and the report."""
    started = time.perf_counter()
    classes = training_classes(config.benchmark, config.fold)
    render = dict(img_size=config.img_size, seed=config.seed, max_distractors=config.max_distractors)
    images, labels = render_images(classes, config.images_per_class, stream=_TRAIN_STREAM, **render)
    heldout_images, heldout_labels = render_images(classes, config.heldout_per_class, stream=_HELDOUT_STREAM,
                                                   **render)
    render_seconds = time.perf_counter() - started

    torch.manual_seed(config.seed)
    backbone = get_spec(config.backbone).build()
    # each residual block starts as the identity: a deep ResNet then trains in a few epochs from scratch
    for module in backbone.modules():
        if hasattr(module, "bn3") and hasattr(module, "downsample"):
            nn.init.zeros_(module.bn3.weight)
    device = resolve_device(config.device)
    model = PooledClassifier(config.backbone, backbone, len(classes)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # a last batch of one image is dropped (the order is new every epoch): BatchNorm cannot train on a single
    # image where a small input leaves layer4 at 1x1
    steps = math.ceil(len(images) / config.bsz) - (len(images) % config.bsz == 1 and len(images) > 1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.epochs * steps,
                                                   pct_start=0.25)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        loss_sum, correct, seen = 0.0, 0, 0
        for step in range(steps):
            index = order[step * config.bsz:(step + 1) * config.bsz]
            flip = torch.rand(len(index), generator=generator) < 0.5
            batch = torch.where(flip[:, None, None, None], images[index].flip(-1), images[index]).to(device)
            target = labels[index].to(device)
            logits = model(batch)
            loss = F.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += float(loss.detach()) * len(index)
            correct += int((logits.argmax(1) == target).sum())
            seen += len(index)
        history.append({"epoch": epoch, "loss": loss_sum / seen, "train_accuracy": 100.0 * correct / seen,
                        "heldout_accuracy": accuracy(model, heldout_images, heldout_labels)})
        logger.info("epoch %d: loss %.4f, train accuracy %.1f%%, held-out accuracy %.1f%%", epoch,
                    history[-1]["loss"], history[-1]["train_accuracy"], history[-1]["heldout_accuracy"])
    backbone.cpu().eval()
    report = {**asdict(config), "classes": classes, "test_classes_never_drawn": fold_classes(config.benchmark,
                                                                                               config.fold),
              "images": len(images), "heldout_images": len(heldout_images),
              "heldout_accuracy": history[-1]["heldout_accuracy"] if history else None, "history": history,
              "render_seconds": render_seconds, "seconds": time.perf_counter() - started}
    return backbone, report


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``python -m apps.pretrain``."""
    defaults = PretrainConfig()
    parser = ArgumentParser(prog="python -m apps.pretrain", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the torchvision state-dict file to write (OUT.json beside it)")
    given = {**asdict(defaults), "backbones": tuple(BACKBONES), "benchmarks": FOLD_BENCHMARKS,
             "folds": range(NFOLDS), "distractor_counts": range(synthetic.MAX_DISTRACTORS + 1)}
    add_flags(parser, "pretrain", "--backbone", "--benchmark", "--fold", "--seed", "--img-size", "--images-per-class",
              **given)
    parser.add_argument("--heldout-per-class", type=int, default=defaults.heldout_per_class)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    add_flags(parser, "pretrain", "--bsz", "--lr", "--device", "--max-distractors", **given)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Pretrain and write ``OUT`` and ``OUT.json``; exit status 2 on bad flags."""
    args = build_parser().parse_args(argv)
    for flag in ("img_size", "images_per_class", "heldout_per_class", "epochs", "bsz"):
        if getattr(args, flag) < 1:
            build_parser().error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.lr <= 0:
        build_parser().error(f"--lr must be positive, got {args.lr}")

    def run() -> None:
        ensure_console_logging("%(asctime)s %(message)s")
        if args.out.is_dir():
            raise OutputFolderError(f"OUT {args.out} is a folder; give the file to write, e.g. "
                                    f"{args.out / 'backbone.pth'}")
        prepare_output_folder(args.out.parent, "OUT")
        config = PretrainConfig(**{key: value for key, value in vars(args).items() if key != "out"})
        backbone, report = pretrain_backbone(config)
        atomic_torch_save(backbone.state_dict(), args.out)
        atomic_write_text(json.dumps(report, indent=2) + "\n", args.out.with_suffix(".json"))
        logger.info("wrote %s (held-out accuracy %s%%, %.0f s)", args.out, report["heldout_accuracy"],
                    report["seconds"])

    return run_cli(run, "python -m apps.pretrain")


if __name__ == "__main__":
    sys.exit(main())
