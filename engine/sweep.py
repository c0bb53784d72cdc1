"""test.py's work: every (seed, fold, shot) of ``--seeds``/``--fold``/``--nshot`` under the released test protocol.

A single fold and shot is a sweep of one; :func:`report` writes its table. Each (fold, shot) is exactly a
separate ``test.py --fold F --nshot K`` run: its dataset is built as that run builds it (the episodes are
fixed by the seed when the dataset is built), the RNGs are re-seeded with the seed right before its pass,
and the released line ``Fold F mIoU: ... FB-IoU: ...`` is logged after it. What is shared: every dataset is
built and its CAM files checked before any model runs (a missing file stops the sweep before the first
episode), and each fold's checkpoint is loaded once and tested at every seed and shot.

**Nothing lost.** After every cell, ``episodes.npz`` (per-episode records, :mod:`engine.episode_records`),
``results.json`` and the table are rewritten (atomically) with the cells finished so far; ``"complete"``
says whether all are. An interrupted run (Ctrl-C, or bad input met in a later cell) says how to continue:
``test.py ... --resume`` keeps the finished cells, after checking that they are what this command would
compute (same flags, checked by :mod:`engine.run_folder`; the same checkpoint bytes; the same episodes), and
runs the others.
"""
from __future__ import annotations

import argparse
import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from common.distributed import DistInfo, EpisodeSampler, check_on_main, local_batch_size
from common.errors import UserInputError
from common.evaluation import IoUMeter
from common.io import sha256_file
from common.logger import log_params
from common.seed import fix_randseed
from common.vis import Visualizer
from data.benchmarks import FOLD_BENCHMARKS, TITLES
from data.dataset import OutsideValueReport, build_dataloader, build_dataset
from data.fewshot import FewShotDataset
from data.synthetic import MARKER as SYNTHETIC_MARKER
from engine.bootstrap import (CONFIDENCE, METHOD, BASE_SEED, bootstrap_samples, percentile_interval,
                              seed_mean_samples)
from engine.episode_records import (EPISODES_NAME, Cell, EpisodeCollector, EpisodeRecords, RecordsError,
                                    first_difference, read_run, run_cells, write_episodes)
from engine.loops import PassResult, test_pass
from engine.paper_results import paper_protocol, paper_source
from engine.protocols import PROTOCOLS, protocol_note, protocol_record
from engine.tables import (OUTPUT_NAMES, RunResult, TableRow, build_table, table_as_dict, table_markdown,
                           table_notes, table_title, write_outputs)
from model import build_model
from model.checkpoint import (SlimState, backbone_sha256, check_backbone, check_state_fits, checkpoint_backbone_weights,
                              load_model_state, read_state_dict)
from priors.provenance import check_cam_provenance, check_cams_exist

logger = logging.getLogger(__name__)


class ResumeError(UserInputError, ValueError):
    """``--resume`` cannot keep the finished cells of the run folder."""


@dataclass
class Sweep:
    """The cells of a test run: those planned, and of the finished ones what each measured, its per-episode
    records and its (R, 2) bootstrap mIoU/FB-IoU samples (none with ``--bootstrap 0``); with several seeds,
    the samples of their mean per (fold, shot) (:meth:`seed_means`)."""

    cells: list[Cell]
    runs: dict[Cell, RunResult] = field(default_factory=dict)
    records: dict[Cell, EpisodeRecords] = field(default_factory=dict)
    samples: dict[Cell, np.ndarray] = field(default_factory=dict)
    _seed_means: dict[tuple[Any, ...], np.ndarray] = field(default_factory=dict)  # by (fold, shot), seeds, R

    def add(self, run: RunResult, records: EpisodeRecords, resamples: int) -> None:
        """A finished cell, bootstrapped with ``resamples`` resamples (0: not at all)."""
        self.runs[run.cell] = run
        self.records[run.cell] = records
        if resamples:
            self.samples[run.cell] = bootstrap_samples(records, resamples)

    def seed_means(self, resamples: int) -> dict[tuple[int, int], np.ndarray]:
        """Per (fold, shot) with several finished seeds, the (R, 2) bootstrap samples of their mean (the seeds'
        joint resamples, :func:`engine.bootstrap.seed_mean_samples`); none with ``resamples`` 0."""
        groups: dict[tuple[int, int], list[Cell]] = {}
        for cell in self.cells:
            if cell in self.runs and resamples:
                groups.setdefault((cell.fold, cell.shot), []).append(cell)
        out = {}
        for key, cells in groups.items():
            if len(cells) > 1:
                memo = (key, tuple(cell.seed for cell in cells), resamples)  # once per set of finished seeds
                if memo not in self._seed_means:
                    self._seed_means[memo] = seed_mean_samples([self.records[cell] for cell in cells], resamples)
                out[key] = self._seed_means[memo]
        return out

    def finished(self) -> list[RunResult]:
        """The finished cells' runs, in the planned order."""
        return [self.runs[cell] for cell in self.cells if cell in self.runs]

    @property
    def complete(self) -> bool:
        """Every planned cell finished."""
        return all(cell in self.runs for cell in self.cells)


def planned_cells(args: argparse.Namespace) -> list[Cell]:
    """The cells of ``--seeds`` x ``--fold`` x ``--nshot`` in run order: fold, then seed, then shot (each
    fold's checkpoint is loaded once)."""
    return [Cell(seed, fold, shot) for fold in args.folds for seed in args.seeds for shot in args.nshots]


def build_test_datasets(args: argparse.Namespace, cells: list[Cell]) -> dict[Cell, FewShotDataset]:
    """``{cell: dataset}`` for every cell, each with its CAM files checked; they share one report of masks read
    with values outside the class range."""
    datasets = {}
    mask_report = OutsideValueReport()
    for cell in cells:
        dataset = build_dataset(args.benchmark, datapath=args.datapath, fold=cell.fold, split="test", shot=cell.shot,
                                img_size=args.img_size, cam_train_path=args.traincampath,
                                cam_val_path=args.valcampath, splitpath=args.splitpath,
                                use_original_imgsize=args.use_original_imgsize, nepisodes=args.nepisodes,
                                seed=cell.seed, strict_masks=args.strict_masks, mask_report=mask_report)
        check_cams_exist(dataset)
        datasets[cell] = dataset
    return datasets


def read_checkpoints(args: argparse.Namespace, folds: list[int]) -> dict[int, dict[str, torch.Tensor]]:
    """The checkpoints of ``folds`` (``args.checkpoints``), each read once and checked against the model before
    any episode runs: a checkpoint that does not fit stops the sweep before the folds ahead of it have run."""
    if not folds:
        return {}
    model = build_model(args.backbone, backbone_weights="none", masking=args.masking,
                        use_original_imgsize=args.use_original_imgsize)
    states = {}
    backbone_hashes: dict[Optional[str], str] = {}  # per --backbone-weights, for slim checkpoints
    for fold in folds:
        path = args.checkpoints[fold]
        states[fold] = state = read_state_dict(path)
        check_state_fits(model, state, f"{path}: ")
        if isinstance(state, SlimState):  # its backbone is built from weights: check them now, not at its turn
            weights = args.backbone_weights or state.backbone.get("weights")
            if weights not in backbone_hashes:
                backbone_hashes[weights] = backbone_sha256(build_model(args.backbone, backbone_weights=weights))
            check_backbone(model, state.backbone, f"{path}: ", sha256=backbone_hashes[weights])
    return states


def load_fold_model(args: argparse.Namespace, state: dict[str, torch.Tensor], device: torch.device,
                    origin: str = "") -> torch.nn.Module:
    """The model with a fold's checkpoint ``state`` loaded, on ``device``, in eval mode (compiled with
    ``--compile``); a slim checkpoint's backbone is built from ``--backbone-weights`` or the weights it names."""
    model = build_model(args.backbone, backbone_weights=args.backbone_weights or checkpoint_backbone_weights(state),
                        masking=args.masking, use_original_imgsize=args.use_original_imgsize)
    load_model_state(model, state, origin=origin)  # slim: checks the backbone is the one it was trained on
    model.to(device).eval()
    if args.compile:
        model.compile_learner()
    return model


def test_one(model: torch.nn.Module, dataset: FewShotDataset, args: argparse.Namespace, *, cell: Cell,
             device: torch.device, info: DistInfo, vis_dir: Optional[Path]) -> tuple[PassResult, EpisodeRecords]:
    """One released test pass of ``model`` over ``dataset`` (this rank's share of the episodes), and the
    per-episode records of every rank's share."""
    sampler = EpisodeSampler(len(dataset), rank=info.rank, world_size=info.world_size)
    loader = build_dataloader(dataset, bsz=local_batch_size(args.bsz, info), nworker=args.nworker, shuffle=False,
                              seed=cell.seed, sampler=sampler)
    hook = Visualizer(vis_dir, dataset.class_names()).save_batch if vis_dir is not None else None
    collector = EpisodeCollector()
    fix_randseed(cell.seed)
    result = test_pass(model, loader, IoUMeter.for_dataset(dataset, device), nshot=cell.shot, stage=args.stage,
                       device=device, amp=args.amp, batch_hook=hook, score_hook=collector)
    return result, collector.records(cell, dataset, sampler.indices())


def _check_kept(records: EpisodeRecords, dataset: FewShotDataset) -> None:
    """A finished cell's records must hold the episodes this command draws for it."""
    drawn = [(e.class_id, e.query, tuple(e.supports)) for e in (dataset.episode(i) for i in range(len(dataset)))]
    difference = first_difference(records.episodes(), drawn, ("then;", "now"))
    if difference:
        raise ResumeError(f"--resume: the episodes of {records.cell.label()} differ from the interrupted run's "
                          f"({difference}): its data or split lists changed; start a new run with another --logpath")


def resume_sweep(args: argparse.Namespace, run_dir: Path, datasets: dict[Cell, FewShotDataset]) -> Sweep:
    """The sweep of ``datasets``' cells with the finished ones of the interrupted run in ``run_dir`` kept.

    Raises:
        ResumeError: a finished cell's checkpoint file or episodes are not what this command would test.
    """
    sweep = Sweep(list(datasets))
    if not (run_dir / OUTPUT_NAMES["results"]).is_file():
        return sweep  # stopped before its first cell finished
    try:
        document, records = read_run(run_dir)
    except RecordsError as exc:
        raise ResumeError(f"--resume: {exc}") from exc
    digests: dict[int, str] = {}
    for cell, entry in run_cells(document).items():
        if cell not in datasets:
            continue
        run = RunResult.from_dict(entry)
        checkpoint = args.checkpoints[cell.fold]
        digest = digests.setdefault(cell.fold, sha256_file(checkpoint))
        if run.checkpoint != checkpoint or run.checkpoint_sha256 != digest:
            raise ResumeError(f"--resume: the checkpoint of fold {cell.fold} ({checkpoint}) is not the file the "
                              f"interrupted run tested (SHA-256 {run.checkpoint_sha256[:12]}..., now {digest[:12]}...); "
                              "start a new run with another --logpath")
        _check_kept(records[cell], datasets[cell])
        sweep.add(run, records[cell], args.bootstrap)
    return sweep


def continue_command(args: argparse.Namespace, run_dir: Path) -> str:
    """The command that continues this run: its own, with ``--logpath <run folder>`` and ``--resume``."""
    words = shlex.split(getattr(args, "command", None) or "python test.py")
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word == "--logpath":
            skip = True
        elif not word.startswith("--logpath=") and word != "--resume":
            kept.append(word)
    return shlex.join([*kept, "--logpath", str(run_dir), "--resume"])


def _cells_word(args: argparse.Namespace) -> str:
    return "(seed, fold, shot) cells" if len(args.seeds) > 1 else "(fold, shot) cells"


def _where(cell: Cell, seeds: int) -> str:
    """``fold 0, 1-shot``; with several seeds ``seed 1, fold 0, 1-shot``."""
    return cell.label() if seeds > 1 else f"fold {cell.fold}, {cell.shot}-shot"


def _log_interval(run: RunResult, samples: Optional[np.ndarray], resamples: int, seeds: int) -> None:
    if samples is None:
        return
    miou, fb_iou = (percentile_interval(samples[:, column]) for column in (0, 1))
    text = "  ".join(f"{name} [{i[0]:.2f}, {i[1]:.2f}]" if i else f"{name} [n/a]"
                     for name, i in (("mIoU", miou), ("FB-IoU", fb_iou)))
    logger.info("%d%% interval, %s (%d bootstrap resamples of its %d episodes): %s", round(CONFIDENCE * 100),
                _where(run.cell, seeds), resamples, run.episodes, text)


def run_sweep(args: argparse.Namespace, *, device: torch.device, info: DistInfo, run_dir: Path,
              warnings: Optional[list[str]] = None) -> Sweep:
    """Test every (seed, fold, shot) (:func:`planned_cells`), writing the results after each; with
    ``args.resume``, the finished cells of the run in ``run_dir`` are kept and only the others run. The
    warnings of the CAM folders' check (:mod:`priors.provenance`) are appended to ``warnings``."""
    cells = planned_cells(args)
    datasets = build_test_datasets(args, cells)
    found: list[str] = []
    check_on_main(lambda: found.extend(message for check in check_cam_provenance(list(datasets.values()))
                                       for message in check.warnings))
    if warnings is not None:
        warnings.extend(found)
    sweep = resume_sweep(args, run_dir, datasets) if getattr(args, "resume", False) else Sweep(cells)
    todo = [cell for cell in cells if cell not in sweep.runs]
    if sweep.runs:
        logger.info("Resuming: %d of %d %s finished before are kept; running the other %d", len(sweep.runs),
                    len(cells), _cells_word(args), len(todo))
    single = len(cells) == 1
    try:
        states = read_checkpoints(args, [fold for fold in args.folds if any(cell.fold == fold for cell in todo)])
        for fold in args.folds:
            fold_cells = [cell for cell in todo if cell.fold == fold]
            if not fold_cells:
                continue
            checkpoint = args.checkpoints[fold]
            model = load_fold_model(args, states.pop(fold), device, origin=f"{checkpoint}: ")
            if fold_cells[0] == todo[0]:
                log_params(logger, model)
            digest = sha256_file(checkpoint)
            for cell in fold_cells:
                if not single:
                    logger.info("==================== %s: %s ====================", _where(cell, len(args.seeds)),
                                checkpoint)
                vis_dir = None
                if args.visualize and info.is_main:
                    name = ("" if len(args.seeds) == 1 else f"seed{cell.seed}_") + f"fold{fold}_{cell.shot}shot"
                    vis_dir = run_dir / "vis" if single else run_dir / "vis" / name
                result, records = test_one(model, datasets[cell], args, cell=cell, device=device, info=info,
                                           vis_dir=vis_dir)
                logger.info("Fold %d mIoU: %5.2f \t FB-IoU: %5.2f", fold, result.miou, result.fb_iou)
                run = RunResult(fold=fold, nshot=cell.shot, checkpoint=checkpoint, checkpoint_sha256=digest,
                                miou=result.miou, fb_iou=result.fb_iou, episodes=result.episodes,
                                per_class_iou={str(k): v for k, v in result.per_class_iou.items()},
                                seed=cell.seed, class_ids=records.class_ids,
                                class_names={str(k): v for k, v in datasets[cell].class_names().items()})
                sweep.add(run, records, args.bootstrap)
                _log_interval(run, sweep.samples.get(cell), args.bootstrap, len(args.seeds))
                report(args, sweep, run_dir, write=info.is_main, final=False, warnings=warnings)
            del model
    except (KeyboardInterrupt, UserInputError) as exc:
        if isinstance(exc, KeyboardInterrupt) or sweep.runs:
            kept = (f"{len(sweep.runs)} of {len(cells)} {_cells_word(args)} finished and are kept in "
                    f"{run_dir / OUTPUT_NAMES['results']}" if sweep.runs else
                    f"none of the {len(cells)} {_cells_word(args)} had finished")
            hint = f"{kept}; continue with: {continue_command(args, run_dir)}"
            if isinstance(exc, KeyboardInterrupt):
                raise KeyboardInterrupt(hint) from exc
            logger.warning("Stopped on bad input; %s", hint)
        raise
    mask_report = next(iter(datasets.values())).mask_report
    masks_note = mask_report.summary(mask_report.gathered())
    if masks_note and info.is_main:
        logger.warning(masks_note)
    return sweep


def _run_entry(run: RunResult, samples: Optional[np.ndarray]) -> dict[str, Any]:
    entry = run.as_dict()
    entry["interval"] = None if samples is None else {
        metric: percentile_interval(samples[:, column]) for column, metric in enumerate(("miou", "fb_iou"))}
    return entry


def results_document(args: argparse.Namespace, sweep: Sweep, rows: list[TableRow], *,
                     paper_note: str, synthetic: bool, warnings: Optional[list[str]] = None) -> dict[str, Any]:
    """The content of ``results.json`` (schema in test.py's docstring)."""
    runs = sweep.finished()
    document: dict[str, Any] = {
        "benchmark": args.benchmark, "backbone": args.backbone, "stage": args.stage, "masking": args.masking,
        "img_size": args.img_size, "nepisodes": args.nepisodes, "seed": args.seed, "seeds": list(args.seeds),
        "folds": list(args.folds), "nshots": list(args.nshots), "load": args.load,
        "command": getattr(args, "command", None), "synthetic_data": synthetic,
        "complete": sweep.complete, "cells": {"finished": len(runs), "planned": len(sweep.cells)},
        "episodes_file": EPISODES_NAME,
        "bootstrap": {"resamples": args.bootstrap, "confidence": CONFIDENCE, "method": METHOD,
                      "seed": BASE_SEED} if args.bootstrap else None,
        "runs": [_run_entry(run, sweep.samples.get(run.cell)) for run in runs], "table": table_as_dict(rows),
        "protocol": protocol_record(args),
        "paper_source": paper_note, "cam_manifests": getattr(args, "cam_manifests", None),
        "warnings": list(warnings or [])}
    if len(sweep.cells) == 1 and runs:  # the keys of a single run's results.json before sweeps existed
        document.update(document["runs"][0])
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


def report(args: argparse.Namespace, sweep: Sweep, run_dir: Path, *, write: bool = True,
           final: bool = True, warnings: Optional[list[str]] = None) -> dict[str, Any]:
    """The table of ``sweep``'s finished cells: written (``write``: rank 0) into ``run_dir`` with
    ``episodes.npz`` and ``results.json``, and (``final``) logged when there are several cells. Returns the
    ``results.json`` content. Data made by :mod:`data.synthetic` get no paper numbers."""
    synthetic = (Path(args.datapath) / SYNTHETIC_MARKER).is_file()
    runs = sweep.finished()
    protocol = getattr(args, "protocol", None)
    rows = build_table(runs, args.benchmark, args.backbone, with_paper=not synthetic, samples=sweep.samples,
                       seed_means=sweep.seed_means(args.bootstrap),
                       best_of_seeds=bool(protocol) and PROTOCOLS[protocol].best_of_seeds)
    title, note = table_title(args.benchmark, args.backbone, synthetic=synthetic), paper_source()
    notes = comparison_notes(args, rows, synthetic) + table_notes(
        rows, note, folds=args.benchmark in FOLD_BENCHMARKS, resamples=args.bootstrap, seeds=args.seeds,
        protocol=protocol_note(protocol_record(args)))
    document = results_document(args, sweep, rows, paper_note=note, synthetic=synthetic, warnings=warnings)
    if write:
        # the records first: results.json names only cells whose episodes are on disk
        write_episodes(run_dir / EPISODES_NAME, [sweep.records[run.cell] for run in runs])
        paths = write_outputs(run_dir, document, rows, title=title, notes=notes)
        if final:
            logger.info("Wrote %s, %s in %s", EPISODES_NAME, ", ".join(path.name for path in paths.values()), run_dir)
    if final and len(sweep.cells) > 1:
        logger.info("\n%s", table_markdown(rows, title=title, notes=notes))
    return document
