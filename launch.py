"""The paper's grid of training runs and their test sweeps as cluster jobs (submitit: SLURM, or local processes).

    python launch.py grid --benchmark pascal coco --backbone vgg16 resnet50 --fold 0 1 2 3 \\
        --executor slurm --gpus-per-job 4 --time 24:00:00 --partition P [--account A --qos Q --constraint C] \\
        [--grid-dir logs/paper_grid] [--dry-run] [train.py flags, e.g. --datapath ../Datasets_HSN]
    python launch.py status logs/paper_grid

One training job per (benchmark, backbone, fold), DDP over its GPUs, in its own run folder under the grid folder,
with the released settings per benchmark unless train.py flags say otherwise; then a test job (after them) that
tests every fold at ``--nshot`` and writes the paper-layout tables into the grid folder. Preempted or timed-out
jobs requeue themselves and resume from ``last.pt``; the same command again submits only what is left. What is
where: :mod:`engine.grid`; submitting: :mod:`engine.cluster`; the jobs: :mod:`engine.grid_jobs`;
the guide: docs/cluster.md.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from common.cli import ArgumentParser, run_cli
from common.flags import add_flags, check_minimums
from common.paths import LOG_ROOT
from data.benchmarks import BENCHMARKS, NFOLDS
from engine.cluster import EXECUTORS, ClusterOptions, launch, status
from engine.grid import GridSpec
from model.backbone import BACKBONES


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description="Train and test the paper's grid as cluster jobs (SLURM through submitit, "
                                        "or local processes)", allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)

    grid = commands.add_parser("grid", allow_abbrev=False,
                               help="submit the grid (flags not listed here are train.py's, given to every cell)",
                               description="Submit one training job per cell and a test job after them. Flags not "
                                           "listed here are train.py's, given to every cell.")
    cells = grid.add_argument_group("the grid")
    add_flags(cells, "launch", "--benchmark", "--backbone", "--fold", benchmarks=BENCHMARKS,
              backbones=tuple(BACKBONES), folds=range(NFOLDS), all_folds=list(range(NFOLDS)))
    cells.add_argument("--grid-dir", default=str(LOG_ROOT / "grid"),
                       help="the grid's folder: runs/, tests/, tables.md, jobs.json, submitit/")
    add_flags(cells, "launch", "--nshot")
    cells.add_argument("--test-nepisodes", type=int, default=None,
                       help="test episodes per (fold, shot) (default: test.py's, the released 1000)")
    cells.add_argument("--test-bsz", type=int, default=None, help="test.py --bsz (default: test.py's)")
    add_flags(cells, "launch", "--bootstrap")

    where = grid.add_argument_group("where the jobs run")
    where.add_argument("--executor", choices=EXECUTORS, default="slurm",
                       help="slurm: sbatch through submitit; local: the same jobs as processes on this machine")
    where.add_argument("--gpus-per-job", type=int, default=1, help="GPUs of a training job (one DDP rank each)")
    where.add_argument("--tasks-per-job", type=int, default=None,
                       help="DDP ranks of a training job (default: --gpus-per-job, at least 1; CPU ranks use gloo)")
    where.add_argument("--cpus-per-task", type=int, default=8,
                       help="CPUs per rank: SLURM's --cpus-per-task and torch's threads (loader workers: --nworker)")
    where.add_argument("--time", default="24:00:00", help="time limit of a job (SLURM --time); a job that reaches "
                                                          "it requeues itself and resumes")
    where.add_argument("--partition", default=None)
    where.add_argument("--account", default=None)
    where.add_argument("--qos", default=None)
    where.add_argument("--constraint", default=None)
    where.add_argument("--mem-gb", type=int, default=None, help="memory of a job (SLURM --mem; default: the "
                                                               "partition's)")
    where.add_argument("--max-requeues", type=int, default=20,
                       help="requeues of a job (preemption, time limit, node failure) before it stops; a job that "
                            "fails otherwise is never requeued")
    where.add_argument("--signal-delay", type=int, default=120,
                       help="seconds between SLURM's SIGUSR2 and the kill, for the job to stop and requeue")
    where.add_argument("--parallel", type=int, default=1, help="--executor local: jobs at a time")
    where.add_argument("--dry-run", action="store_true", help="print what would be submitted; submit nothing")

    watch = commands.add_parser("status", help="each cell's job, state, epoch, best mIoU and last log line")
    watch.add_argument("grid_dir", help="the --grid-dir of a launch.py grid")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, train_flags = parser.parse_known_args(argv)
    if args.command == "status":
        if train_flags:
            parser.error(f"unrecognized arguments: {' '.join(train_flags)}")
        print(status(Path(args.grid_dir)))
        return 0
    check_minimums(parser, args, "launch")
    for flag, least in (("--gpus-per-job", 0), ("--cpus-per-task", 1), ("--max-requeues", 0), ("--parallel", 1)):
        if getattr(args, flag[2:].replace("-", "_")) < least:
            parser.error(f"argument {flag}: must be >= {least}")
    spec = GridSpec(benchmarks=tuple(args.benchmark), backbones=tuple(args.backbone), folds=tuple(args.fold),
                    train_flags=tuple(train_flags), nshots=tuple(args.nshots), test_nepisodes=args.test_nepisodes,
                    test_bsz=args.test_bsz, bootstrap=args.bootstrap)
    options = ClusterOptions(executor=args.executor, partition=args.partition, time=args.time, account=args.account,
                             qos=args.qos, constraint=args.constraint, gpus_per_job=args.gpus_per_job,
                             tasks_per_job=args.tasks_per_job, cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb,
                             max_requeues=args.max_requeues, signal_delay_s=args.signal_delay, parallel=args.parallel)
    return launch(Path(args.grid_dir), spec, options, dry_run=args.dry_run, command=shlex.join(["python", "launch.py", *argv]))


def cli(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(lambda: main(argv), "launch.py")


if __name__ == "__main__":
    sys.exit(cli())
