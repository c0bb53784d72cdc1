"""Test a trained IMR-HSNet (1-shot or n-shot) with the released protocol and print the released final line.

    python test.py --backbone resnet50 --fold 0 --benchmark pascal --nshot 1 --load logs/my_run.log/best_model.pt \\
        --valcampath ../Datasets_HSN/CAM_VOC_Val/
    -> ... Fold 0 mIoU: xx.xx 	 FB-IoU: yy.yy

``--nepisodes`` episodes (released: 1000; FSS-1000: every test image once, 2400, as HSNet) are drawn with
``--seed`` (released: 0; both as ``--protocol hsnet``, the default, sets them); mIoU is the mean foreground IoU over the fold's classes (FSS-1000: the test classes)
and FB-IoU the mean of foreground and background IoU (PASCAL ignores the 255 boundary).

Several folds and shots in one command (the paper's table), one checkpoint per fold through ``{fold}``:

    python test.py --backbone resnet50 --benchmark pascal --fold 0 1 2 3 --nshot 1 5 \\
        --load 'logs/pascal_r50_f{fold}.log/best_model.pt'

Each (fold, shot) gives the numbers a separate ``--fold F --nshot K`` run gives (same episodes, same seeds) and
logs its own ``Fold F mIoU: ...`` line; every checkpoint is checked before any work starts, and each is
loaded once. ``--seeds 0 1 2 3 4`` runs the whole protocol once per episode seed (``--seeds 0``, the default,
is the released protocol). Every number gets a 95% bootstrap interval over its episodes (``--bootstrap N``
resamples, 0: none; :mod:`engine.bootstrap`). At the end the table (rows: shots; columns: folds 0..3 and mean;
ours with its interval, the paper's and the difference; per seed with several seeds; for mIoU and FB-IoU) is
printed. Written into the run folder after every (seed, fold, shot) cell, for one run as for many:
``table.md``, ``table.csv``, ``table.png`` (per-fold mIoU bars with error bars, ours vs the paper's),
``episodes.npz`` (every episode's class, images and pixel counts, :mod:`engine.episode_records`) and
``results.json``::

    {"benchmark", "backbone", "stage", "masking", "img_size", "nepisodes", "seed": the first of "seeds",
     "seeds": [0], "folds": [0, 1], "nshots": [1, 5],
     "load": --load made absolute (the file, or the template still holding {fold}),
     "command": "python test.py ...",
     "synthetic_data": true when --datapath holds data.synthetic's marker (then no paper numbers),
     "complete": false until every cell finished, "cells": {"finished": n, "planned": m},
     "episodes_file": "episodes.npz",
     "bootstrap": {"resamples", "confidence": 0.95, "method", "seed"} or null with --bootstrap 0,
     "runs": [{"seed", "fold", "nshot", "checkpoint": path tested, "checkpoint_sha256", "miou", "fb_iou",
               "interval": {"miou": [low, high], "fb_iou": [low, high]} or null, "episodes",
               "class_ids": the fold's classes, "per_class_iou": {"<0-based class id>": IoU},
               "class_names": {"<0-based class id>": name},
               "per_class": [{"class_id": 0-based id, "name": "aeroplane", "iou": IoU}, ...]}, ...],
               # in run order: fold, then seed, then shot
     "table": {"miou" | "fb_iou": {"<shot>": {"ours" | "paper" | "diff":
                                                {"folds": [fold 0..3, null = no number], "mean": m or null,
                                                 "interval": {"folds": [[low, high] or null], "mean": ...}},
                                              "seeds": {"<seed>": {...}}, "seeds_sd": {...},
                                              "seeds_best": {...}}}},
                # "interval" on ours and diff with --bootstrap; "seeds", "seeds_sd" with several seeds;
                # "seeds_best" (the best seed per fold) with several seeds of a best-of-seeds protocol
     "protocol": {"name", "source", "preset": its values on this benchmark ("seeds", "nepisodes",
                  "use_original_imgsize"[, "bsz"]), "effective": the values tested with, "overridden":
                  {flag dest: [preset's, given]}, "statistic": "mean" | "mean+best" | "mean+sd", "best_of_seeds",
                  "sources": {value: "repository@commit file:line ..."}},
     "paper_source": where the paper's numbers come from (engine/paper_results.json),
     "cam_manifests": {"valcampath": SHA-256 of the CAM folder's cam_manifest.json, null without one},
     "warnings": ["fold 1: ... was trained with other settings than it is tested with ...", ...]}

With one fold, one shot and one seed, that run's keys (``fold nshot checkpoint checkpoint_sha256 miou fb_iou
interval episodes per_class_iou per_class class_names seed class_ids``) are also at the top level, as in the
``results.json`` of earlier versions. Numbers are percentages; ours are unrounded (the table prints them with two decimals, as the final
line does).

Another paper's test protocol: ``--protocol imr-hsnet | afanet | tlg | bam | hdmnet | pi-clip | panet`` sets
its seeds, episodes per fold, label size (original-size labels: ``--use-original-imgsize --bsz 1``) and
statistic (bam, hdmnet, pi-clip: the best seed is shown beside the mean, labelled); each value's source (repository,
file, line) is in :mod:`engine.protocols` and docs/evaluation.md. ``--seeds``, ``--nepisodes``,
``--use-original-imgsize`` or ``--bsz`` given beside it override the preset, and ``results.json`` records both.

An interrupted run (Ctrl-C) prints the command that continues it: the same flags with ``--resume`` (and
``--logpath`` naming its folder) keep the finished cells and run the others; ``--nworker``, ``--device`` and
``--bootstrap`` may change, nothing else.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence

from common.cli import run_cli
from engine.args import parse_args
from engine.testing import run_test


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Test ``args.checkpoints`` at every fold and shot; returns what is written to ``results.json``
    (:func:`engine.testing.run_test`, which the grid's test job of ``launch.py`` calls too)."""
    return run_test(args)


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags and test; exit status 2 on bad input."""
    return run_cli(lambda: main(parse_args("test", argv)), "test.py")


if __name__ == "__main__":
    sys.exit(cli())
