"""Submitting a grid (:mod:`engine.grid`) through submitit: to SLURM, or as local processes; and its jobs' states.

``launch.py grid`` calls :func:`launch`: it checks the grid folder and every cell's run folder, then submits one
training job per cell that has not finished and has no job queued or running, and one test job that depends on
them (``--dependency=afterok``). On SLURM it returns once they are queued; ``--executor local`` runs the jobs on
this machine, ``--parallel`` at a time, and returns when the test job is done. A relaunch of the same command
submits only what is left (the pending test job of the earlier launch is cancelled and replaced, so that it
waits for the new jobs). ``--dry-run`` prints what would be submitted and submits nothing.

Each training job has ``--tasks-per-job`` tasks (default: one per GPU of ``--gpus-per-job``), one DDP rank each;
the test job one task (one GPU). SLURM sends ``SIGUSR2`` ``--signal-delay`` seconds before the time limit or a
preemption; what a job then does: :mod:`engine.grid_jobs`.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from common.errors import UserInputError
from common.paths import REPO_ROOT
from engine import grid as grid_lib
from engine.grid import GridSpec, JobRecord

EXECUTORS = ("slurm", "local")
LIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
               "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT")
SIGNAL_MARGIN_S = 15  # of --signal-delay: time left to requeue and exit once the grace period is over


class ClusterError(UserInputError, RuntimeError):
    """SLURM cannot take the grid as asked (no sbatch here, an unknown partition, a bad --time)."""


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how the grid's jobs run."""

    executor: str = "slurm"
    partition: Optional[str] = None
    time: str = "24:00:00"
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    gpus_per_job: int = 1
    tasks_per_job: Optional[int] = None  # default: one per GPU (at least one)
    cpus_per_task: int = 8
    mem_gb: Optional[int] = None
    max_requeues: int = 20
    signal_delay_s: int = 120
    parallel: int = 1  # local executor: jobs at a time

    @property
    def tasks(self) -> int:
        return self.tasks_per_job or max(1, self.gpus_per_job)

    @property
    def minutes(self) -> int:
        return time_minutes(self.time)


def time_minutes(value: str) -> int:
    """SLURM's ``--time`` forms (``MM``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in whole minutes (at least 1)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value.strip())
    if not match:
        raise ClusterError(f"--time {value}: give minutes, HH:MM:SS or D-HH:MM:SS (e.g. 24:00:00)")
    days, *fields = match.groups()
    parts = [int(x) for x in fields if x]
    units = (3600, 60, 1) if days or len(parts) == 3 else (60, 1)  # "D-HH[:MM[:SS]]", "HH:MM:SS"; "MM[:SS]"
    seconds = int(days or 0) * 86400 + sum(part * unit for part, unit in zip(parts, units))
    return max(1, -(-seconds // 60))


# --- SLURM on this machine ------------------------------------------------------------------------------------

def check_slurm(options: ClusterOptions) -> None:
    """``sbatch`` is here and ``--partition`` is one of SLURM's (``sinfo``)."""
    if shutil.which("sbatch") is None:
        raise ClusterError("sbatch not found: --executor slurm submits from a SLURM login node (load your cluster's "
                           "slurm module or log in to one), or run the grid here with --executor local")
    if options.partition:
        partitions = slurm_partitions()
        if partitions is not None and options.partition not in partitions:
            raise ClusterError(f"--partition {options.partition}: no such SLURM partition; sinfo lists "
                               f"{', '.join(partitions) or 'none'}")


def slurm_partitions() -> Optional[list[str]]:
    """The partition names ``sinfo`` lists (None when it cannot say)."""
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return None if done.returncode else sorted({line.strip() for line in done.stdout.splitlines() if line.strip()})


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """``{job id: state}`` from ``squeue`` (jobs SLURM still holds, finished ones for ``MinJobAge``), then ``sacct``
    for the others; ``UNKNOWN`` where neither answers."""
    states: dict[str, str] = {}
    ids = sorted({str(i) for i in job_ids if i})
    if not ids:
        return states
    for command in (["squeue", "-h", "-t", "all", "-o", "%i|%T", "-j", ",".join(ids)],
                    ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)]):
        missing = [i for i in ids if i not in states]
        if not missing or shutil.which(command[0]) is None:
            continue
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in done.stdout.splitlines():
            job, _, state = line.strip().partition("|")
            if job in missing and state:
                states[job] = state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
    return {i: states.get(i, "UNKNOWN") for i in ids}


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def record_states(records: Sequence[JobRecord]) -> dict[str, str]:
    """The state of each recorded job: SLURM's for SLURM jobs; for local ones the state the launcher saw at the
    end, RUNNING while its process lives, STOPPED when it is gone without one."""
    states = slurm_states([r.job_id for r in records if r.executor == "slurm"])
    for record in records:
        if record.executor == "local":
            states[record.job_id] = record.state or ("RUNNING" if _pid_alive(record.job_id) else "STOPPED")
    return states


# --- submission -----------------------------------------------------------------------------------------------

def slurm_parameters(options: ClusterOptions, name: str, *, tasks: int, gpus: int,
                     dependency: Optional[str] = None) -> dict[str, Any]:
    """submitit's ``SlurmExecutor.update_parameters`` of a job (sbatch's flags with underscores)."""
    params: dict[str, Any] = {
        "job_name": name, "time": options.minutes, "nodes": 1, "ntasks_per_node": tasks,
        "cpus_per_task": options.cpus_per_task, "signal_delay_s": options.signal_delay_s,
        # the jobs import this checkout's packages, wherever Python is installed
        "setup": [f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"],
    }
    optional = {"gpus_per_node": gpus, "partition": options.partition, "account": options.account, "qos": options.qos,
                "constraint": options.constraint, "mem": options.mem_gb and f"{options.mem_gb}GB",
                "dependency": dependency}
    params.update({key: value for key, value in optional.items() if value})  # in the order --dry-run prints
    # requeueable whatever the cluster's JobRequeue default; a test job whose training failed is removed
    params["additional_parameters"] = {"requeue": True, **({"kill_on_invalid_dep": "yes"} if dependency else {})}
    return params


def sbatch_flags(params: dict[str, Any]) -> str:
    """The ``#SBATCH`` flags that :func:`slurm_parameters` stand for, for ``--dry-run``."""
    flags = []
    for key, value in params.items():
        if key == "setup":
            continue
        if key == "additional_parameters":
            flags += [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in value.items()]
        elif key == "signal_delay_s":
            flags.append(f"--signal=USR2@{value}")
        else:
            flags.append(f"--{key.replace('_', '-')}={value}")
    return " ".join(flags + ["--open-mode=append"])


@dataclass
class Plan:
    """What a launch does with each cell: ``submit`` (``resume``: its run folder holds its run), or ``skip``."""

    cell: grid_lib.Cell
    argv: list[str]
    action: str  # "submit" | "finished" | "queued"
    resume: bool = False
    job_id: Optional[str] = None  # the live job, for "queued"


def plan_grid(grid: Path, spec: GridSpec, states: Callable[[Sequence[JobRecord]], dict[str, str]]) -> list[Plan]:
    """Decide per cell (every run folder checked first: one that holds another run stops the launch)."""
    latest = grid_lib.latest_jobs(grid_lib.read_jobs(grid))
    known = states(list(latest.values()))
    plans = []
    for cell in grid_lib.expand(spec):
        argv = grid_lib.cell_train_argv(spec, cell, grid)
        args = grid_lib.resolve_cell(spec, cell, grid)
        resume = grid_lib.check_cell_folder(cell.run_dir(grid), args)
        record = latest.get(cell.name)
        if grid_lib.cell_finished(cell.run_dir(grid), args.niter):
            plans.append(Plan(cell, argv, "finished", resume))
        elif record is not None and known.get(record.job_id) in LIVE_STATES:
            plans.append(Plan(cell, argv, "queued", resume, record.job_id))
        else:
            plans.append(Plan(cell, argv, "submit", resume))
    return plans


def _check_batch(spec: GridSpec, options: ClusterOptions, grid: Path) -> None:
    for cell in grid_lib.expand(spec):
        bsz = grid_lib.resolve_cell(spec, cell, grid).bsz
        if bsz % options.tasks:
            raise ClusterError(f"--bsz {bsz} of {cell.name} is not divisible by the {options.tasks} ranks of a job "
                               f"(--tasks-per-job/--gpus-per-job); use a multiple of {options.tasks}")


def _print(line: str = "") -> None:
    print(line, flush=True)


def launch(grid: Path, spec: GridSpec, options: ClusterOptions, *, dry_run: bool = False,
           command: str = "", poll_s: float = 5.0) -> int:
    """Check, plan and submit the grid (see the module's docstring); returns the exit status (0: submitted, or
    with the local executor: every job finished; 1: a local job failed)."""
    from engine import grid_jobs

    grid = grid.absolute()
    options.minutes  # noqa: B018 - a bad --time stops the launch here
    grid_lib.check_train_flags(spec.train_flags)
    relaunch = grid_lib.check_grid_folder(grid, spec)
    slurm = options.executor == "slurm"
    if slurm and (not dry_run or shutil.which("sinfo")):
        check_slurm(options)
    _check_batch(spec, options, grid)
    plans = plan_grid(grid, spec, record_states)
    groups = grid_lib.test_groups(spec)
    test_argvs = [grid_lib.group_test_argv(spec, g, grid, grid_lib.resolve_cell(spec, g.cells()[0], grid))
                  for g in groups]
    tests_done = all(grid_lib.group_finished(grid, g) for g in groups)
    old_test = grid_lib.latest_jobs(grid_lib.read_jobs(grid)).get("test")
    old_test_state = record_states([old_test]).get(old_test.job_id) if old_test else None

    grace = max(0.0, options.signal_delay_s - SIGNAL_MARGIN_S)
    to_submit = [p for p in plans if p.action == "submit"]
    _print(f"grid {grid}{' (relaunch)' if relaunch else ''}: {len(plans)} training cells, "
           f"{len(to_submit)} to submit, executor {options.executor}")
    for plan in plans:
        what = {"submit": "resume" if plan.resume else "start", "finished": "finished: skipped",
                "queued": f"job {plan.job_id} queued or running: skipped"}[plan.action]
        _print(f"  {plan.cell.name}: {what}")
        if dry_run and plan.action == "submit":
            _print(f"    python train.py {shlex.join(plan.argv)}")
            if slurm:
                params = slurm_parameters(options, plan.cell.name, tasks=options.tasks, gpus=options.gpus_per_job)
                _print(f"    sbatch {sbatch_flags(params)}")
    test_needed = not tests_done and not (to_submit == [] and old_test_state in LIVE_STATES)
    if test_needed:
        _print(f"  test: {len(groups)} sweep(s) after the training jobs, then {grid / grid_lib.TABLES_NAME}")
        if dry_run:
            for argv in test_argvs:
                _print(f"    python test.py {shlex.join(argv)}")
            if slurm:
                params = slurm_parameters(options, "test", tasks=1, gpus=min(options.gpus_per_job, 1),
                                          dependency="afterok:<the training jobs above>")
                _print(f"    sbatch {sbatch_flags(params)}")
    else:
        _print("  test: " + ("finished: skipped" if tests_done else f"job {old_test.job_id} queued: skipped"))
    if dry_run:
        _print("dry run: nothing submitted")
        return 0

    grid_lib.write_spec(grid, spec, command)
    folder = grid / grid_lib.SUBMITIT_DIR
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    jobs = grid_lib.read_jobs(grid)

    def make_job(plan: Plan) -> "grid_jobs.TrainCellJob":
        return grid_jobs.TrainCellJob(plan.argv, str(plan.cell.run_dir(grid).absolute()), options.cpus_per_task,
                                      options.max_requeues, grace)

    test_job = grid_jobs.TestGridJob(str(grid), test_argvs, options.cpus_per_task)
    if slurm:
        return _submit_slurm(grid, folder, options, plans, to_submit, make_job, test_job if test_needed else None,
                             jobs, old_test, old_test_state)
    return _run_local(grid, folder, options, to_submit, make_job, test_job if test_needed else None, jobs, poll_s)


def _submit_slurm(grid: Path, folder: Path, options: ClusterOptions, plans: list[Plan], to_submit: list[Plan],
                  make_job: Callable, test_job: Any, jobs: list[JobRecord], old_test: Optional[JobRecord],
                  old_test_state: Optional[str]) -> int:
    import submitit
    from submitit.core.utils import FailedJobError

    def submit(name: str, job: Any, **params: Any) -> str:
        """sbatch ``job``; its refusal (a bad --gpus-per-job, --account, ...) becomes one line, exit 2."""
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=options.max_requeues)
        executor.update_parameters(**slurm_parameters(options, name, **params))
        try:
            job_id = str(executor.submit(job).job_id)
        except FailedJobError as exc:
            reason = " ".join(str(exc).split()) or "no message"
            raise ClusterError(f"sbatch refused the job of {name}: {reason} (the jobs submitted before it are in "
                               f"jobs.json; fix the flag and run the same command again)") from None
        jobs.append(JobRecord(name, job_id, "slurm"))
        grid_lib.write_jobs(grid, jobs)  # after every job: an interrupted launch still knows what it queued
        return job_id

    live = [p.job_id for p in plans if p.action == "queued" and p.job_id]
    for plan in to_submit:
        live.append(submit(plan.cell.name, make_job(plan), tasks=options.tasks, gpus=options.gpus_per_job))
        _print(f"  submitted {plan.cell.name}: job {live[-1]}")
    if test_job is not None:
        if old_test is not None and old_test_state in LIVE_STATES and to_submit:
            subprocess.run(["scancel", old_test.job_id], capture_output=True, timeout=60)
            _print(f"  cancelled the earlier test job {old_test.job_id} (it waited for jobs now replaced)")
        dependency = "afterok:" + ":".join(live) if live else None
        job_id = submit("test", test_job, tasks=1, gpus=min(options.gpus_per_job, 1), dependency=dependency)
        _print(f"  submitted test: job {job_id}" + (f" ({dependency})" if dependency else ""))
    _print(f"watch it: python launch.py status {grid}")
    return 0


def _run_local(grid: Path, folder: Path, options: ClusterOptions, to_submit: list[Plan], make_job: Callable,
               test_job: Any, jobs: list[JobRecord], poll_s: float) -> int:
    import submitit

    def start(name: str, job: Any, tasks: int, gpus: int) -> tuple[JobRecord, Any]:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=options.minutes, tasks_per_node=tasks, gpus_per_node=gpus, nodes=1,
                                   signal_delay_s=options.signal_delay_s)
        job = executor.submit(job)
        record = JobRecord(name, str(job.job_id), "local")
        jobs.append(record)
        grid_lib.write_jobs(grid, jobs)
        _print(f"  started {name}: local job {job.job_id}")
        return record, job

    def finish(record: JobRecord, job: Any) -> bool:
        try:
            job.results()  # every task's (a job of several tasks has no single result)
            ok = True
        except Exception:  # noqa: BLE001 - any failure of the job; its log says which
            ok = False
        record.state = "COMPLETED" if ok else "FAILED"
        grid_lib.write_jobs(grid, jobs)
        _print(f"  {record.name}: {record.state}" + ("" if ok else f" (log: {job.paths.stderr})"))
        return ok

    failed = 0
    waiting = list(to_submit)
    running: list[tuple[JobRecord, Any]] = []
    while waiting or running:
        while waiting and len(running) < max(1, options.parallel):
            plan = waiting.pop(0)
            running.append(start(plan.cell.name, make_job(plan), options.tasks, options.gpus_per_job))
        time.sleep(poll_s)
        for entry in [e for e in running if e[1].done()]:
            running.remove(entry)
            failed += not finish(*entry)
    if failed:
        _print(f"{failed} training job(s) failed: the test sweep is not run; fix the cause and run the same command "
               "again (it submits only the cells that did not finish)")
        return 1
    if test_job is not None:
        record, job = start("test", test_job, 1, min(options.gpus_per_job, 1))
        while not job.done():
            time.sleep(poll_s)
        if not finish(record, job):
            return 1
    _print(f"tables: {grid / grid_lib.TABLES_NAME}")
    return 0


def status(grid: Path) -> str:
    """``launch.py status GRID``: the grid's cells and test sweeps as a table."""
    return grid_lib.format_status(grid_lib.grid_status(grid.absolute(), record_states))

