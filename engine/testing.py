"""A whole ``test.py`` run of resolved arguments: the run folder, the sweep over (seed, fold, shot), the report.

``test.py`` calls :func:`run_test`; so does the test job that ``launch.py grid`` submits after the training jobs
(:mod:`engine.grid_jobs`), as one process or as the ranks of a torchrun/SLURM launch.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from common.device import configure_tf32, resolve_device
from common.distributed import broadcast_object, cleanup, init_distributed
from common.io import atomic_write_text
from common.logger import log_args, setup_logging
from engine.args import FOLD_PLACEHOLDER, args_to_json, resolve_run_dir
from engine.run_folder import open_run_folder, removed_on_bad_input, resumed_args_name
from engine.tables import OUTPUT_NAMES

logger = logging.getLogger("test")


def run_test(args: argparse.Namespace) -> dict[str, Any]:
    """Test ``args.checkpoints`` at every fold and shot; returns what is written to ``results.json`` (with
    ``"run_dir"`` added)."""
    from priors.provenance import cam_manifest_digests
    from engine.checkpoint_args import checkpoint_warnings
    from engine.sweep import report, run_sweep

    device = resolve_device(args.device)
    configure_tf32(args.tf32)
    info, device = init_distributed(device)
    try:
        name_from = args.load.replace(FOLD_PLACEHOLDER, "")
        path = Path(str(broadcast_object(str(resolve_run_dir(args.logpath, training=False, load=name_from)))))
        run = open_run_folder(path, args, info, training=False)
        run_dir = run.path
        with removed_on_bad_input(run, info, finished=OUTPUT_NAMES["results"]):
            setup_logging(run_dir, rank=info.rank)
            args.cam_manifests = cam_manifest_digests(args, training=False)
            if info.is_main:  # a resumed run keeps the args.json its first part wrote
                atomic_write_text(args_to_json(args), run_dir / resumed_args_name(run_dir, args.resume))
            log_args(logger, vars(args))
            logger.info("Run folder: %s | device: %s | ranks: %d", run_dir, device, info.world_size)

            warnings = checkpoint_warnings(args) if info.is_main else []  # in the log and in results.json
            runs = run_sweep(args, device=device, info=info, run_dir=run_dir, warnings=warnings)
            document = report(args, runs, run_dir, write=info.is_main, warnings=warnings)
        logger.info("==================== Finished Testing ====================")
        document["run_dir"] = str(run_dir)
        return document
    finally:
        cleanup()
