"""test.py's work: every (fold, shot) of ``--fold``/``--nshot`` under the released test protocol.

A single fold and shot is a sweep of one; :func:`report` writes its table. Each (fold, shot) is exactly a
separate ``test.py --fold F --nshot K`` run: its dataset is built as that run builds it (the episodes are
fixed by ``--seed`` when the dataset is built), the RNGs are re-seeded with ``--seed`` right before its pass,
and the released line ``Fold F mIoU: ... FB-IoU: ...`` is logged after it. What is shared: every dataset is
built and its CAM files checked before any model runs (a missing file stops the sweep before the first
episode), and each fold's checkpoint is loaded once and tested at every shot.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Optional

import torch

from common.distributed import DistInfo, EpisodeSampler, check_on_main, local_batch_size
from common.evaluation import IoUMeter
from common.io import sha256_file
from common.logger import log_params
from common.seed import fix_randseed
from common.vis import Visualizer
from data.benchmarks import FOLD_BENCHMARKS, TITLES
from data.dataset import OutsideValueReport, build_dataloader, build_dataset, check_cams_exist
from data.fewshot import FewShotDataset
from data.synthetic import MARKER as SYNTHETIC_MARKER
from engine.cam_provenance import check_cam_provenance
from engine.loops import PassResult, test_pass
from engine.paper_results import paper_protocol, paper_source
from engine.tables import (RunResult, TableRow, build_table, table_as_dict, table_markdown, table_notes,
                           table_title, write_outputs)
from model import build_model
from model.checkpoint import check_state_fits, load_model_state, read_state_dict

logger = logging.getLogger(__name__)


def build_test_datasets(args: argparse.Namespace) -> dict[tuple[int, int], FewShotDataset]:
    """``{(fold, shot): dataset}`` for every ``--fold`` x ``--nshot``, each with its CAM files checked; they
    share one report of masks read with values outside the class range."""
    datasets = {}
    mask_report = OutsideValueReport()
    for fold in args.folds:
        for shot in args.nshots:
            dataset = build_dataset(args.benchmark, datapath=args.datapath, fold=fold, split="test", shot=shot,
                                    img_size=args.img_size, cam_train_path=args.traincampath,
                                    cam_val_path=args.valcampath, splitpath=args.splitpath,
                                    use_original_imgsize=args.use_original_imgsize, nepisodes=args.nepisodes,
                                    seed=args.seed, strict_masks=args.strict_masks, mask_report=mask_report)
            check_cams_exist(dataset)
            datasets[fold, shot] = dataset
    return datasets


def read_checkpoints(args: argparse.Namespace) -> dict[int, dict[str, torch.Tensor]]:
    """Every fold's checkpoint (``args.checkpoints``), each read once and checked against the model before any
    episode runs: a checkpoint that does not fit stops the sweep before the folds ahead of it have run."""
    model = build_model(args.backbone, backbone_weights="none", masking=args.masking,
                        use_original_imgsize=args.use_original_imgsize)
    states = {}
    for fold in args.folds:
        path = args.checkpoints[fold]
        states[fold] = read_state_dict(path)
        check_state_fits(model, states[fold], f"{path}: ")
    return states


def load_fold_model(args: argparse.Namespace, state: dict[str, torch.Tensor], device: torch.device) -> torch.nn.Module:
    """The model with a fold's checkpoint ``state`` loaded, on ``device``, in eval mode (compiled with
    ``--compile``)."""
    model = build_model(args.backbone, backbone_weights=args.backbone_weights, masking=args.masking,
                        use_original_imgsize=args.use_original_imgsize)
    load_model_state(model, state)
    model.to(device).eval()
    if args.compile:
        model.compile_learner()
    return model


def test_one(model: torch.nn.Module, dataset: FewShotDataset, args: argparse.Namespace, *, shot: int,
             device: torch.device, info: DistInfo, vis_dir: Optional[Path]) -> PassResult:
    """One released test pass of ``model`` over ``dataset`` (this rank's share of the episodes)."""
    sampler = EpisodeSampler(len(dataset), rank=info.rank, world_size=info.world_size)
    loader = build_dataloader(dataset, bsz=local_batch_size(args.bsz, info), nworker=args.nworker, shuffle=False,
                              seed=args.seed, sampler=sampler)
    visualizer = Visualizer(vis_dir, dataset.class_names()) if vis_dir is not None else None
    hook = (lambda batch, pred, idx, iou: visualizer.save_batch(batch, pred, idx, iou)) if visualizer else None
    fix_randseed(args.seed)
    return test_pass(model, loader, IoUMeter.for_dataset(dataset, device), nshot=shot, stage=args.stage,
                     device=device, amp=args.amp, batch_hook=hook)


def run_sweep(args: argparse.Namespace, *, device: torch.device, info: DistInfo, run_dir: Path,
              warnings: Optional[list[str]] = None) -> list[RunResult]:
    """Test every (fold, shot) in ``--fold`` x ``--nshot`` order; returns one :class:`RunResult` each. The
    warnings of the CAM folders' check (:mod:`engine.cam_provenance`) are appended to ``warnings``."""
    datasets = build_test_datasets(args)
    found: list[str] = []
    check_on_main(lambda: found.extend(message for check in check_cam_provenance(list(datasets.values()))
                                       for message in check.warnings))
    if warnings is not None:
        warnings.extend(found)
    states = read_checkpoints(args)
    single = len(datasets) == 1
    results = []
    for fold in args.folds:
        checkpoint = args.checkpoints[fold]
        model = load_fold_model(args, states.pop(fold), device)
        if fold == args.folds[0]:
            log_params(logger, model)
        digest = sha256_file(checkpoint)
        for shot in args.nshots:
            if not single:
                logger.info("==================== fold %d, %d-shot: %s ====================", fold, shot, checkpoint)
            vis_dir = None
            if args.visualize and info.is_main:
                vis_dir = run_dir / "vis" if single else run_dir / "vis" / f"fold{fold}_{shot}shot"
            result = test_one(model, datasets[fold, shot], args, shot=shot, device=device, info=info, vis_dir=vis_dir)
            logger.info("Fold %d mIoU: %5.2f \t FB-IoU: %5.2f", fold, result.miou, result.fb_iou)
            results.append(RunResult(fold=fold, nshot=shot, checkpoint=checkpoint, checkpoint_sha256=digest,
                                     miou=result.miou, fb_iou=result.fb_iou, episodes=result.episodes,
                                     per_class_iou={str(k): v for k, v in result.per_class_iou.items()}))
        del model
    report = next(iter(datasets.values())).mask_report
    masks_note = report.summary(report.gathered())
    if masks_note and info.is_main:
        logger.warning(masks_note)
    return results


def results_document(args: argparse.Namespace, runs: list[RunResult], rows: list[TableRow], *,
                     paper_note: str, synthetic: bool, warnings: Optional[list[str]] = None) -> dict[str, Any]:
    """The content of ``results.json`` (schema in test.py's docstring)."""
    document: dict[str, Any] = {
        "benchmark": args.benchmark, "backbone": args.backbone, "stage": args.stage, "masking": args.masking,
        "img_size": args.img_size, "nepisodes": args.nepisodes, "seed": args.seed, "folds": list(args.folds),
        "nshots": list(args.nshots), "load": args.load, "command": getattr(args, "command", None),
        "synthetic_data": synthetic,
        "runs": [run.as_dict() for run in runs], "table": table_as_dict(rows), "paper_source": paper_note,
        "cam_manifests": getattr(args, "cam_manifests", None), "warnings": list(warnings or [])}
    if len(runs) == 1:  # the keys of a single run's results.json before sweeps existed
        document.update(runs[0].as_dict())
    return document


def comparison_notes(args: argparse.Namespace, rows: list[TableRow], synthetic: bool) -> list[str]:
    """Why our numbers and the paper's may not be comparable: synthetic data, no folds, other test settings."""
    if synthetic:
        return [f"The data under --datapath are synthetic ({args.datapath}/{SYNTHETIC_MARKER}): the paper's "
                "numbers do not apply, so its lines stay empty."]
    notes = []
    if args.benchmark not in FOLD_BENCHMARKS:
        notes.append(f"{TITLES[args.benchmark]} has no folds: its test split's numbers are in the fold 0 column.")
    if any(v is not None for row in rows for v in (*row.paper.folds, row.paper.mean)):
        # --nepisodes None is the benchmark's released count, the paper's protocol
        differ = [f"--{key.replace('_', '-')} {getattr(args, key)} (paper: {value})"
                  for key, value in paper_protocol().items() if getattr(args, key) not in (None, value)]
        if differ:
            notes.append("Test settings differ from the paper's: " + ", ".join(differ) + ".")
    return notes


def report(args: argparse.Namespace, runs: list[RunResult], run_dir: Path, *, write: bool = True,
           warnings: Optional[list[str]] = None) -> dict[str, Any]:
    """The table of ``runs``: written (``write``: rank 0) into ``run_dir``, and logged when there are several
    runs. Returns the ``results.json`` content. Data made by :mod:`data.synthetic` get no paper numbers."""
    synthetic = (Path(args.datapath) / SYNTHETIC_MARKER).is_file()
    rows = build_table(runs, args.benchmark, args.backbone, with_paper=not synthetic)
    title, note = table_title(args.benchmark, args.backbone, synthetic=synthetic), paper_source()
    notes = comparison_notes(args, rows, synthetic) + table_notes(rows, note,
                                                                  folds=args.benchmark in FOLD_BENCHMARKS)
    document = results_document(args, runs, rows, paper_note=note, synthetic=synthetic, warnings=warnings)
    if write:
        paths = write_outputs(run_dir, document, rows, title=title, notes=notes)
        logger.info("Wrote %s in %s", ", ".join(path.name for path in paths.values()), run_dir)
    if len(runs) > 1:
        logger.info("\n%s", table_markdown(rows, title=title, notes=notes))
    return document
