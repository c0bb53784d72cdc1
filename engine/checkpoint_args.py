"""test.py compares its settings with those each checkpoint was trained with, so that a mismatch is never
silent: a model trained with ``--masking released --stage 2`` and tested with ``--masking paper --stage 3``
still runs (the weights fit), but the log and ``results.json`` say so.

Where a checkpoint has an ``args.json`` beside it (``train.py`` writes one into every run folder), its
backbone, masking, stage, image size, benchmark and fold are compared with the test's; the same checkpoint
file given for two folds is reported too. Released checkpoints come without ``args.json``: nothing to compare.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from data.benchmarks import FOLD_BENCHMARKS
from engine.args import flag_name

logger = logging.getLogger(__name__)

ARGS_NAME = "args.json"
COMPARED = ("benchmark", "backbone", "masking", "stage", "img_size")  # and the fold, per checkpoint


def training_args(checkpoint: Path) -> Optional[Mapping[str, Any]]:
    """The ``args.json`` beside ``checkpoint`` (None when there is none); raises ValueError when unreadable."""
    path = Path(checkpoint).parent / ARGS_NAME
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path} ({exc})") from exc
    if not isinstance(stored, dict):
        raise ValueError(f"{path} is not an args.json")
    return stored


def setting_differences(stored: Mapping[str, Any], args: argparse.Namespace, fold: int) -> list[str]:
    """``"--stage 2 -> 3"`` (trained -> tested) for every compared setting that differs; keys that
    ``stored`` lacks are skipped."""
    tested = {key: getattr(args, key) for key in COMPARED}
    if args.benchmark in FOLD_BENCHMARKS:
        tested["fold"] = fold
    return [f"{flag_name(key)} {stored[key]!r} -> {value!r}" for key, value in tested.items()
            if key in stored and stored[key] != value]


def checkpoint_warnings(args: argparse.Namespace) -> list[str]:
    """Warnings (logged, and returned for ``results.json``) about ``args.checkpoints`` (fold -> path): settings
    that differ from the ``args.json`` beside a checkpoint, and one file given for several folds."""
    warnings = []
    seen: dict[tuple[int, int], list[int]] = {}  # the folds of each file
    for fold in args.folds:
        checkpoint = Path(args.checkpoints[fold])
        stat = os.stat(checkpoint)
        seen.setdefault((stat.st_dev, stat.st_ino), []).append(fold)
        try:
            stored = training_args(checkpoint)
        except ValueError as exc:
            warnings.append(f"fold {fold}: {exc}; the settings {checkpoint} was trained with are not compared")
            continue
        differences = setting_differences(stored, args, fold) if stored is not None else []
        if differences:
            warnings.append(f"fold {fold}: {checkpoint} was trained with other settings than it is tested with "
                            f"(trained -> tested, from {checkpoint.parent / ARGS_NAME}): {'; '.join(differences)}")
    for folds in seen.values():
        if len(folds) > 1:
            warnings.append(f"folds {', '.join(map(str, folds))} are tested with the same checkpoint file "
                            f"{args.checkpoints[folds[0]]}: each fold's model is trained on other classes")
    for message in warnings:
        logger.warning(message)
    return warnings
