"""What a grid's jobs run, on a SLURM node or as local processes (submitit pickles these callables).

:class:`TrainCellJob` trains one cell: every task of the job is one DDP rank (one per GPU; gloo over CPU
processes), the rendezvous taken from SLURM's (or submitit's local) environment. The cell's run folder decides
how it starts: a run already there is continued with ``--resume`` (a requeued or relaunched job), an empty folder
starts the run.

Preemption and time limits (SLURM sends ``SIGUSR2`` ``--signal-delay`` seconds before it kills the job, see
:mod:`engine.cluster`): every rank notes the signal; at the next training step all ranks agree to stop (one
flag all-reduced per step), the step in progress is dropped before its backward pass, and rank 0 requeues the
job (``scontrol requeue``). The requeued job resumes from ``last.pt``, the last finished epoch: the epoch that
was interrupted is done again, and ``--resume`` cuts its log lines and TensorBoard events back, so every epoch is
logged once. If no training step comes within the grace period (validation, start-up), rank 0 requeues at once
and the job is killed; the resume is the same. ``scontrol requeue`` from outside (an administrator, the tests)
kills the job without a signal: the same resume.

Limits: a job is requeued at most ``max_requeues`` times (SLURM's ``SLURM_RESTART_COUNT``, which counts every
requeue: preemption, time limit, node failure, ``scontrol requeue``); then it stops, FAILED, with a message in its
log. A job that fails for any other reason (an error, bad input) is never requeued: ``launch.py grid`` again
resubmits the cells that did not finish.

:class:`TestGridJob` runs the test sweep of every (benchmark, backbone) of the grid and writes ``GRID/tables.md``.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import submitit
import torch

from common.distributed import all_reduce_flag
from engine import grid as grid_lib
from engine.args import parse_args
from engine.run_folder import ARGS_NAME

logger = logging.getLogger(__name__)

EXIT_REQUEUED = 3  # a task's exit status after its job was requeued (SLURM shows the job PENDING again)


class StopRequested(RuntimeError):
    """SLURM asked the job to stop (preemption or time limit); raised on every rank at the same step."""


class PreemptionWatch:
    """The ``SIGUSR2`` handler of a training job: notes the signal, and stops training at the next step.

    Args:
        grace_s: seconds after the signal within which a step boundary must come; after that rank 0 requeues
            at once (SLURM then kills the job).
        requeue: what rank 0 calls to requeue the job (returns whether it did).
    """

    def __init__(self, grace_s: float, requeue: Callable[[], bool], rank: int) -> None:
        self.grace_s, self._requeue, self.rank = grace_s, requeue, rank
        self.requested = self.requeued = False
        self._lock = threading.Lock()
        self._timer: Optional[threading.Timer] = None

    def install(self, signum: int = signal.SIGUSR2) -> None:
        signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:  # noqa: ARG002 - the signal API
        if self.requested:
            return
        self.requested = True
        print(f"grid job: rank {self.rank} got {signal.Signals(signum).name}: stopping at the next training step",
              file=sys.stderr, flush=True)
        if self.rank == 0 and self.grace_s > 0:
            self._timer = threading.Timer(self.grace_s, self.requeue_once)
            self._timer.daemon = True
            self._timer.start()

    def requeue_once(self) -> bool:
        """Requeue the job (rank 0, once)."""
        with self._lock:
            if self.requeued or self.rank != 0:
                return self.requeued
            self.requeued = bool(self._requeue())
            return self.requeued

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def loss_hook(self, loss: torch.Tensor, batch_idx: int) -> torch.Tensor:  # noqa: ARG002 - the hook's API
        """Called by the training loop after each step's forward: all ranks stop together once any was signalled."""
        if all_reduce_flag(self.requested, loss.device):
            raise StopRequested(f"stopped at training step {batch_idx} on SLURM's signal")
        return loss


def _slurm_requeue(max_requeues: int) -> bool:
    """``scontrol requeue`` this SLURM job unless it was requeued ``max_requeues`` times already."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        print("grid job: not a SLURM job: not requeued; run launch.py grid again to continue", file=sys.stderr,
              flush=True)
        return False
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    if restarts >= max_requeues:
        print(f"grid job: requeued {restarts} times already (--max-requeues {max_requeues}): not requeued again; "
              "run launch.py grid again to continue", file=sys.stderr, flush=True)
        return False
    # said before the call: SLURM stops the job's steps as it requeues it, which may kill this process (and
    # scontrol, its child) before anything after the call is printed
    print(f"grid job: requeueing job {job_id} (restart {restarts + 1} of at most {max_requeues})", file=sys.stderr,
          flush=True)
    done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    if done.returncode < 0:  # stopped by a signal: the requeue is under way (it stops the job's steps)
        print(f"grid job: scontrol requeue {job_id} was stopped by signal {-done.returncode} as the job was "
              "requeued", file=sys.stderr, flush=True)
        return True
    if done.returncode:
        print(f"grid job: scontrol requeue {job_id} failed: {done.stderr.strip()}", file=sys.stderr, flush=True)
        return False
    return True


def _join_rendezvous() -> int:
    """Export the DDP rendezvous of this job's tasks (``MASTER_ADDR``/``PORT``, ``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``) for :func:`common.distributed.init_distributed`; returns this task's rank."""
    env = submitit.JobEnvironment()
    # submitit's own lines go to the job's stderr file only, not into the run's log.txt
    logging.getLogger("submitit").propagate = False
    if env.num_tasks > 1:
        # every GPU of the node stays visible: a rank takes cuda:LOCAL_RANK (common.distributed)
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return env.global_rank


class TrainCellJob(submitit.helpers.Checkpointable):
    """Train one cell of a grid (``train_argv``: its ``train.py`` flags, ``--logpath`` its run folder).

    Args:
        train_argv: the cell's flags (:func:`engine.grid.cell_train_argv`), without ``--resume``.
        run_dir: the cell's run folder.
        threads: torch's intra-op threads per rank (``--cpus-per-task``; the same on every executor, so that
            the numbers do not depend on where the job ran).
        max_requeues: requeues allowed (preemption, time limit, node failure).
        grace_s: seconds between SLURM's signal and the kill, less a margin (:class:`PreemptionWatch`).
    """

    def __init__(self, train_argv: Sequence[str], run_dir: str, threads: int, max_requeues: int,
                 grace_s: float) -> None:
        self.train_argv, self.run_dir = list(train_argv), run_dir
        self.threads, self.max_requeues, self.grace_s = threads, max_requeues, grace_s

    def __call__(self) -> dict[str, Any]:
        from engine import training

        rank = _join_rendezvous()
        torch.set_num_threads(self.threads)
        resume = (Path(self.run_dir) / ARGS_NAME).is_file()  # a run is there: continue it
        args = parse_args("train", self.train_argv + (["--resume"] if resume else []))
        watch = PreemptionWatch(self.grace_s, lambda: _slurm_requeue(self.max_requeues), rank)
        watch.install()
        try:
            result = training.train(args, loss_hook=watch.loss_hook)
        except StopRequested as stop:
            watch.cancel()
            requeued = watch.requeue_once() if rank == 0 else True
            print(f"grid job: {stop}; {'requeued' if requeued else 'not requeued'}", file=sys.stderr, flush=True)
            sys.exit(EXIT_REQUEUED if requeued else 1)
        watch.cancel()
        if result["status"] != "finished":
            raise RuntimeError(f"training of {self.run_dir} stopped: {result['status']} (see its log.txt)")
        return {**result, "run_dir": str(result["run_dir"])}  # status, best_miou, epochs


class TestGridJob(submitit.helpers.Checkpointable):
    """Run the grid's test sweeps (``test_argvs``: one ``test.py`` flag list per (benchmark, backbone)), each
    continued with ``--resume`` where an earlier job left it unfinished, and write ``GRID/tables.md``."""

    def __init__(self, grid: str, test_argvs: Sequence[Sequence[str]], threads: int) -> None:
        self.grid, self.test_argvs, self.threads = grid, [list(a) for a in test_argvs], threads

    def __call__(self) -> str:
        from engine.testing import run_test

        _join_rendezvous()
        torch.set_num_threads(self.threads)
        grid = Path(self.grid)
        spec = grid_lib.read_spec(grid)
        for argv, group in zip(self.test_argvs, grid_lib.test_groups(spec)):
            if grid_lib.group_finished(grid, group):
                continue
            resume = (group.run_dir(grid) / ARGS_NAME).is_file()
            run_test(parse_args("test", argv + (["--resume"] if resume else [])))
        return str(grid_lib.write_tables(grid, spec))
