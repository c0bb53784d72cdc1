"""The steps of a training run, in the order ``train.py`` calls them; each one can be run and tested alone.

1. :func:`open_run_folder`: the run folder (the same on every rank), checked against the run-folder policy;
2. :func:`load_resume_state`: ``last.pt`` when ``--resume``, with what came after it rolled back (a run it
   cannot continue is refused before anything is changed);
3. :func:`decide_seed`: the run's seed (given, the run's own on ``--resume``, or drawn as released), the same
   on every rank;
4. :func:`record_arguments`: ``args.json`` written (with the SHA-256 of the CAM folders' manifests), the
   arguments logged;
5. :func:`build_trainer`: the model (frozen backbone), Adam, the AMP scaler, restored from ``last.pt``;
6. :func:`build_loaders`: training episodes (random supports, sharded over ranks) and the fixed validation
   episodes, their CAM files checked (present, made from these images for these classes);
7. :func:`run_epochs`: per epoch a training pass, a validation pass, TensorBoard (the released scalars, and
   what a person watches a run by: :mod:`engine.run_watch`), ``best_model.pt`` and ``last.pt``; stops cleanly
   on a non-finite loss.

:func:`train` runs them in that order (``train.py``, and the cluster jobs of ``launch.py``: :mod:`engine.grid_jobs`).
"""
from __future__ import annotations

import argparse
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from common.device import configure_tf32, resolve_device
from common.distributed import (DistInfo, EpisodeSampler, broadcast_object, check_on_main, cleanup, init_distributed,
                                local_batch_size, seed_for)
from common.evaluation import IoUMeter
from common.io import atomic_write_text
from common.logger import TensorBoardWriter, log_args, log_params, setup_logging
from common.seed import fix_randseed
from data.dataset import OutsideValueReport, build_dataloader, build_dataset
from data.fewshot import FewShotDataset
from engine import run_checkpoint as ckpt
from engine import run_folder
from engine.args import args_to_json, resolve_run_dir
from engine.loops import NonFiniteLossError, autocast, forward_1shot, to_device, train_epoch, validate_epoch
from engine.micro_batches import MicroBatchChoice, resolve_micro_bsz
from engine.run_folder import RunFolder
from engine.run_watch import RunWatch
from model import build_model
from model.checkpoint import BACKBONE_PREFIX, backbone_record, check_backbone, is_slim
from priors.provenance import cam_manifest_digests, check_cam_provenance, check_cams_exist

logger = logging.getLogger("train")

LossHook = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class Trainer:
    """What the epochs update: the model (``net`` is it wrapped for DP/DDP), its optimizer and AMP scaler,
    where the run starts and the best validation mIoU so far."""

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]
    start_epoch: int
    best_miou: float
    backbone: dict[str, Any]  # the frozen backbone's record, which slim checkpoints keep in place of its tensors


@dataclass
class EpisodeLoaders:
    """The training and validation episodes of a run and their loaders."""

    trn_set: FewShotDataset
    val_set: FewShotDataset
    trn_sampler: EpisodeSampler
    trn_loader: DataLoader
    val_loader: DataLoader


def open_run_folder(args: argparse.Namespace, info: DistInfo) -> RunFolder:
    """The run folder of ``--logpath`` (rank 0's choice, on every rank), checked against the run-folder policy
    (:mod:`engine.run_folder`: a new run needs an unused folder, ``--resume`` the same flags) and created."""
    path = Path(str(broadcast_object(str(resolve_run_dir(args.logpath, training=True)))))
    return run_folder.open_run_folder(path, args, info, training=True)


def load_resume_state(args: argparse.Namespace, run_dir: Path, info: DistInfo) -> Optional[dict[str, Any]]:
    """``last.pt`` of the run when ``--resume`` (None otherwise, and when the first epoch never finished);
    what the interrupted run wrote after that checkpoint is rolled back (rank 0).

    Raises:
        RunFolderError: on every rank, before anything is changed, when the run has finished epochs but its
            ``last.pt`` is gone or unreadable (:func:`engine.run_checkpoint.resume_state`).
    """
    if not args.resume:
        return None
    on_main: dict[str, Optional[dict[str, Any]]] = {}
    check_on_main(lambda: on_main.update(state=ckpt.resume_state(run_dir)))
    from_checkpoint = bool(broadcast_object(on_main.get("state") is not None))
    state = on_main.get("state") if info.is_main else (ckpt.load_last(run_dir) if from_checkpoint else None)
    if state is not None and args.episode_rng == "released":
        started_with = state["args"].get("nworker")
        if started_with != args.nworker:  # the released draws follow the worker count (data.episodes)
            raise run_folder.RunFolderError(
                f"--resume: {run_dir} draws its training episodes as released (--episode-rng released), which "
                f"depends on the worker count; resume with --nworker {started_with} (got --nworker {args.nworker})")
    if info.is_main:
        run_folder.roll_back(run_dir, state.get("log_length", 0) if state is not None else 0,
                             no_checkpoint=state is None)
    return state


def decide_seed(args: argparse.Namespace, run_dir: Path, info: DistInfo) -> int:
    """The run's seed, decided here and nowhere else, the same on every rank; sets ``args.seed`` (recorded in
    ``args.json``): ``--seed`` when given; else on ``--resume`` the seed the run started with (its ``args.json``,
    which the run-folder check has read); else drawn as released (``int(random.random() * 1e5)``), on rank 0."""
    if args.seed is None:
        def choose() -> int:
            stored = run_folder.stored_args(run_dir).get("seed") if args.resume else None
            return int(stored) if stored is not None else int(random.random() * 1e5)  # as released, but recorded

        args.seed = int(broadcast_object(choose() if info.is_main else None))
    return args.seed


def arguments_file_name(args: argparse.Namespace, start_epoch: int) -> str:
    """This run part's arguments file: ``args.json`` for a new run, ``args_resume_epochNNN.json`` on resume."""
    return f"args_resume_epoch{start_epoch:03d}.json" if args.resume else run_folder.ARGS_NAME


def record_arguments(args: argparse.Namespace, run_dir: Path, state: Optional[dict[str, Any]], info: DistInfo,
                     device: torch.device) -> None:
    """Write ``args.json`` (``args_resume_epochNNN.json`` on resume, the run's ``args.json`` kept), with the
    digests of the CAM folders' manifests (``args.cam_manifests``), and log the arguments; a run that starts
    from epoch 0 records that no epoch has finished yet (``progress.json``)."""
    args.cam_manifests = cam_manifest_digests(args, training=True)
    if info.is_main:
        name = arguments_file_name(args, state["epoch"] + 1 if state is not None else 0)
        if args.resume:
            _warn_if_cams_changed(run_dir, args.cam_manifests)
        atomic_write_text(args_to_json(args), run_dir / name)
        if state is None:
            ckpt.write_progress(run_dir, epochs_finished=0)
    log_args(logger, vars(args))
    logger.info("Run folder: %s | device: %s | ranks: %d | CUDA devices: %d", run_dir, device,
                info.world_size, torch.cuda.device_count())


def _warn_if_cams_changed(run_dir: Path, digests: dict[str, Optional[str]]) -> None:
    """Warn when the CAM folders' manifests differ from those the run started with (its ``args.json``)."""
    try:
        started = json.loads((run_dir / run_folder.ARGS_NAME).read_text()).get("cam_manifests")
    except (OSError, ValueError, AttributeError):
        return
    changed = [f"--{flag}" for flag, digest in digests.items() if started is not None and started.get(flag) != digest]
    if changed:
        logger.warning("The CAM folders of %s changed since the run started (their cam_manifest.json differ from "
                       "those args.json records): the epochs ahead read the CAMs as they are now",
                       ", ".join(changed))


def wrap_model(model: nn.Module, device: torch.device, distributed: bool) -> nn.Module:
    """DDP under torchrun, DataParallel when several GPUs are visible (as released), else the model."""
    if distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if device.type == "cuda" and torch.cuda.device_count() > 1:
        return nn.DataParallel(model)
    return model


def build_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    """Adam at ``lr`` over the parameters that train (the frozen backbone's are left out), as released."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)


def build_trainer(args: argparse.Namespace, device: torch.device, state: Optional[dict[str, Any]],
                  distributed: bool) -> Trainer:
    """The model with its backbone frozen, Adam over the rest, the AMP scaler (``--amp`` on CUDA); restored
    from ``state`` (``last.pt``) with the RNG states when resuming. Seed the RNGs first (module init)."""
    model = build_model(args.backbone, backbone_weights=args.backbone_weights, masking=args.masking,
                        use_original_imgsize=False, checkpoint_learner=getattr(args, "checkpoint_learner", False))
    model.backbone.requires_grad_(False)  # frozen, as released (features are taken under no_grad)
    model.to(device)
    if args.compile:
        model.compile_learner()
    log_params(logger, model)
    optimizer = build_optimizer(model, args.lr)
    use_amp = bool(args.amp) and device.type == "cuda"
    if args.amp and not use_amp:
        logger.warning("--amp has no effect on %s (autocast is used on CUDA only)", device)
    if use_amp:
        model.use_channels_last()
    scaler = torch.amp.GradScaler("cuda") if use_amp and args.amp != "bf16" else None

    backbone = backbone_record(model, args.backbone_weights)
    start_epoch, best_miou = 0, float("-inf")
    if state is not None:
        if is_slim(state):  # last.pt format 2: the backbone stays as built, which must be the run's own
            check_backbone(model, state["backbone"], f"--resume: {ckpt.LAST_NAME}: ", sha256=backbone["sha256"],
                           random_hint="its random backbone (--backbone-weights none) is rebuilt from --seed, and "
                                       "this PyTorch built another one: resume with the PyTorch version that "
                                       "started the run")
            missing, unexpected = model.load_state_dict(state["model"], strict=False)
            assert not unexpected and all(key.startswith(BACKBONE_PREFIX) for key in missing), (missing, unexpected)
        else:
            model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, best_miou = state["epoch"] + 1, state["best_miou"]
        ckpt.set_rng_state(state["rng"])
        logger.info("Resumed: epoch %d done, best val. mIoU %.2f", state["epoch"], best_miou)
    return Trainer(model=model, net=wrap_model(model, device, distributed), optimizer=optimizer, scaler=scaler,
                   start_epoch=start_epoch, best_miou=best_miou, backbone=backbone)


def build_loaders(args: argparse.Namespace, info: DistInfo, bsz: int) -> EpisodeLoaders:
    """Training episodes (new supports every epoch, from ``--seed``) and the ``--nepisodes`` validation
    episodes (seed 0, as released), each sharded over the ranks with ``bsz`` episodes per rank and step."""
    common = dict(datapath=args.datapath, fold=args.fold, shot=1, img_size=args.img_size,
                  cam_train_path=args.traincampath, cam_val_path=args.valcampath, splitpath=args.splitpath,
                  use_original_imgsize=False, nepisodes=args.nepisodes, strict_masks=args.strict_masks,
                  mask_report=OutsideValueReport())  # one report: each mask file is warned about once
    trn_set = build_dataset(args.benchmark, split="trn", seed=args.seed, episode_rng=args.episode_rng, **common)
    val_set = build_dataset(args.benchmark, split="val", seed=0, **common)
    check_cams_exist(trn_set)
    check_cams_exist(val_set)
    check_on_main(lambda: check_cam_provenance([trn_set, val_set]))  # made from these images, these classes
    trn_sampler = EpisodeSampler(len(trn_set), rank=info.rank, world_size=info.world_size, shuffle=True,
                                 pad=True, seed=args.seed)
    val_sampler = EpisodeSampler(len(val_set), rank=info.rank, world_size=info.world_size)
    return EpisodeLoaders(
        trn_set=trn_set, val_set=val_set, trn_sampler=trn_sampler,
        trn_loader=build_dataloader(trn_set, bsz=bsz, nworker=args.nworker, shuffle=False, seed=args.seed,
                                    sampler=trn_sampler),
        # validation episodes are the released seed-0 sequence, fixed when the dataset is built
        val_loader=build_dataloader(val_set, bsz=bsz, nworker=args.nworker, shuffle=False, seed=0,
                                    sampler=val_sampler))


def select_training_episodes(args: argparse.Namespace, loaders: EpisodeLoaders, epoch: int, info: DistInfo,
                             bsz: int) -> None:
    """The training episodes of ``epoch``: the sampler's order of this rank, and the dataset's draws for it
    (``--episode-rng released``: the NumPy stream of each simulated worker starts from this rank's epoch seed,
    the one the main process seeds NumPy with)."""
    loaders.trn_sampler.set_epoch(epoch)
    loaders.trn_set.set_epoch(epoch, order=loaders.trn_sampler.indices(), batch_size=bsz, nworker=args.nworker,
                              stream_seed=seed_for(args.seed, epoch, info.rank))


def _run_watch(args: argparse.Namespace, trainer: Trainer, loaders: EpisodeLoaders, writer: TensorBoardWriter,
               info: DistInfo, device: torch.device) -> RunWatch:
    """The run's watch summaries (:mod:`engine.run_watch`), on rank 0, showing episodes of its validation shard."""
    val_set = loaders.val_set
    order = EpisodeSampler(len(val_set), rank=info.rank, world_size=info.world_size).indices()  # as the loader's
    episodes = val_set.episodes
    classes = [episodes[i].class_id for i in order] if episodes is not None else [0] * len(order)
    return RunWatch(writer, args, trainer.optimizer, device, val_order=order, val_classes=classes,
                    val_batch_size=loaders.val_loader.batch_size or 1, class_names=val_set.class_names(),
                    enabled=info.is_main)


def resolve_micro_batch(args: argparse.Namespace, trainer: Trainer, loaders: EpisodeLoaders, run_dir: Path,
                        info: DistInfo, device: torch.device) -> Optional[int]:
    """``--micro-bsz`` for this rank's batches (:func:`engine.micro_batches.resolve_micro_bsz`); ``auto`` on
    CUDA tries training steps on validation episodes (their draw is fixed, so the training draws are unchanged)
    and leaves the gradients cleared. The choice is logged and added to this run part's arguments file
    (``micro_bsz_chosen``)."""
    batch_size = loaders.trn_loader.batch_size or 1

    def try_step(size: int) -> None:  # on the bare model: no DDP communication while ranks probe alone
        episodes = [loaders.val_set[i % len(loaders.val_set)] for i in range(size)]
        batch = to_device(torch.utils.data.default_collate(episodes), device)
        try:
            with autocast(device, args.amp):  # a null context off CUDA
                _, loss = forward_1shot(trainer.model, batch, args.stage)
            loss.backward()
        finally:
            trainer.optimizer.zero_grad(set_to_none=True)

    choice = resolve_micro_bsz(getattr(args, "micro_bsz", None), batch_size, device, try_step)
    micro = choice.size
    if args.micro_bsz == "auto" and torch.distributed.is_initialized():  # every rank the same passes per step
        size = torch.tensor([micro or batch_size], device=device)
        torch.distributed.all_reduce(size, op=torch.distributed.ReduceOp.MIN)
        micro = None if int(size) >= batch_size else int(size)
        choice = MicroBatchChoice(micro, choice.step_peak_gib if micro == choice.size else None)
    if micro is not None:
        logger.info("--micro-bsz %s: batches of %d episodes as %d passes of at most %d", args.micro_bsz, batch_size,
                    -(-batch_size // micro), micro)
    if args.micro_bsz is not None and info.is_main:
        record_file = run_dir / arguments_file_name(args, trainer.start_epoch)
        recorded = json.loads(record_file.read_text())
        recorded["micro_bsz_chosen"] = choice.record(args.micro_bsz, batch_size)
        atomic_write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n", record_file)
    return micro


def run_epochs(args: argparse.Namespace, trainer: Trainer, loaders: EpisodeLoaders, run_dir: Path,
               info: DistInfo, device: torch.device, *, loss_hook: Optional[LossHook] = None,
               after_epoch: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Epochs ``trainer.start_epoch .. --niter - 1``; returns ``{"status", "best_miou", "epochs", "run_dir"}``
    with status ``"finished"`` or ``"nonfinite_loss"`` (the checkpoints then hold the last good epoch).

    ``loss_hook`` and ``after_epoch`` are test seams (inject a loss, simulate a crash after an epoch).
    """
    micro_bsz = resolve_micro_batch(args, trainer, loaders, run_dir, info, device)
    resumed = trainer.start_epoch > 0
    writer = TensorBoardWriter(run_dir, enabled=info.is_main, purge_step=trainer.start_epoch if resumed else None)
    watch = _run_watch(args, trainer, loaders, writer, info, device)
    watch.start(trainer.start_epoch)
    status, epoch, best_miou = "aborted", trainer.start_epoch - 1, trainer.best_miou
    try:
        for epoch in range(trainer.start_epoch, args.niter):
            watch.begin_epoch()
            # A fresh draw of training episodes every epoch (released: fix_randseed(None)), reproducible from
            # --seed so that a resumed run continues exactly where it stopped.
            fix_randseed(seed_for(args.seed, epoch))
            select_training_episodes(args, loaders, epoch, info, loaders.trn_loader.batch_size or 1)
            with watch.timed("train"):
                trn = train_epoch(trainer.net, loaders.trn_loader, trainer.optimizer,
                                  IoUMeter.for_dataset(loaders.trn_set, device), epoch=epoch, stage=args.stage,
                                  device=device, amp=args.amp, scaler=trainer.scaler, micro_bsz=micro_bsz,
                                  loss_hook=loss_hook)
            fix_randseed(0)  # validation episodes are the same every epoch
            with watch.timed("val"):
                val = validate_epoch(trainer.net, loaders.val_loader, IoUMeter.for_dataset(loaders.val_set, device),
                                     epoch=epoch, stage=args.stage, device=device, amp=args.amp,
                                     batch_hook=watch.val_batch if watch.enabled else None)
            if info.is_main:
                if val.miou > best_miou:
                    best_miou = val.miou
                    ckpt.save_best(trainer.model, run_dir,
                                   slim_backbone=trainer.backbone if args.slim_checkpoints else None)
                    logger.info("Model saved @%d w/ val. mIoU: %5.2f.\n", epoch, val.miou)
                writer.log_epoch(epoch, trn.as_dict(), val.as_dict())
                watch.log_epoch(epoch, trn, val, best_miou=best_miou, train_batches=len(loaders.trn_loader))
                ckpt.save_last(run_dir, model=trainer.model, optimizer=trainer.optimizer, epoch=epoch,
                               best_miou=best_miou, args=vars(args), backbone=trainer.backbone,
                               scaler=trainer.scaler,
                               log_length=run_folder.log_length(run_dir),
                               extra={"trn": trn.as_dict(), "val": val.as_dict()})
            best_miou = float(broadcast_object(best_miou))
            if after_epoch is not None:
                after_epoch(epoch)
        status = "finished"
    except NonFiniteLossError as err:
        status = "nonfinite_loss"
        logger.error("Stopping: %s. The checkpoints in %s are those of the last good epoch (%d).",
                     err, run_dir, err.epoch - 1)
    finally:
        if status != "aborted":  # an interrupted run is continued by --resume, which starts a new session
            watch.finish(status, epoch + 1 if status == "finished" else epoch)
        watch.close()
        writer.close()
    masks_note = loaders.trn_set.mask_report.summary(loaders.trn_set.mask_report.gathered())
    if masks_note and info.is_main:
        logger.warning(masks_note)
    if status == "finished":
        logger.info("==================== Finished Training ====================")
    return {"status": status, "best_miou": best_miou, "epochs": epoch + 1, "run_dir": run_dir}


def train(args: argparse.Namespace, *, loss_hook: Optional[LossHook] = None,
          after_epoch: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """A whole training run of the resolved ``train.py`` arguments (:func:`engine.args.parse_args`), on this
    process or as one rank of a torchrun/SLURM launch; returns :func:`run_epochs`' result.

    ``loss_hook`` and ``after_epoch`` are seams: tests inject a loss or simulate a crash, cluster jobs stop at a
    step boundary when SLURM asks them to (:mod:`engine.grid_jobs`).
    """
    device = resolve_device(args.device)
    configure_tf32(args.tf32)
    info, device = init_distributed(device)
    try:
        bsz = local_batch_size(args.bsz, info)
        run = open_run_folder(args, info)
        with run_folder.removed_on_bad_input(run, info, finished=ckpt.LAST_NAME):
            state = load_resume_state(args, run.path, info)
            setup_logging(run.path, rank=info.rank)
            decide_seed(args, run.path, info)
            record_arguments(args, run.path, state, info, device)
            fix_randseed(args.seed)  # the model's initial weights
            trainer = build_trainer(args, device, state, info.distributed)
            loaders = build_loaders(args, info, bsz)
            return run_epochs(args, trainer, loaders, run.path, info, device, loss_hook=loss_hook,
                              after_epoch=after_epoch)
    finally:
        cleanup()
