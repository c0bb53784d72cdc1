"""A real SLURM (one node, CPUs, started by tests/slurm/start_local_slurm.sh): a 2-cell grid of 2 gloo ranks per job,
one job requeued from outside in the middle of training (``scontrol requeue``), the other sent SLURM's
preemption signal (``SIGUSR2``: it stops at a step and requeues itself); every job ends COMPLETED, every epoch is
logged once, nothing of a run folder is lost, and the tables equal those of the same grid run with
``--executor local`` without interruption. Skipped, with the reason, where SLURM cannot run (not root, no
apt-get, the daemons do not start)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.train_helpers import make_tiny_inputs, read_scalar_events

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
START = REPO / "tests" / "slurm" / "start_local_slurm.sh"
NITER = 3


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    """The environment of a shell that talks to the test SLURM (started here when it is not up)."""
    done = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=900)
    if done.returncode:
        reason = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        pytest.skip(f"SLURM cannot run here: bash tests/slurm/start_local_slurm.sh exited {done.returncode}: "
                    f"{reason[0]}")
    conf = subprocess.run(["bash", str(START), "--env"], capture_output=True, text=True, check=True).stdout
    return {**os.environ, "SLURM_CONF": conf.strip().split("=", 1)[1], "PYTHONUNBUFFERED": "1"}


def _launch_argv(tiny, grid: Path, executor: str) -> list[str]:
    return [sys.executable, str(REPO / "launch.py"), "grid", "--benchmark", "pascal", "--backbone", "resnet50",
            "--fold", "0", "1", "--nshot", "1", "--test-nepisodes", "4", "--test-bsz", "2", "--bootstrap", "100",
            "--executor", executor, "--parallel", "2", "--gpus-per-job", "0", "--tasks-per-job", "2",
            "--cpus-per-task", "1", "--time", "15", "--signal-delay", "60", "--grid-dir", str(grid),
            *tiny.argv("--backbone", "resnet50", "--bsz", "2", "--nepisodes", "4", "--niter", str(NITER))]


def _slurm(env: dict[str, str], *command: str) -> str:
    return subprocess.run(list(command), env=env, capture_output=True, text=True, timeout=60).stdout


def _state(env: dict[str, str], job: str) -> str:
    return _slurm(env, "squeue", "-h", "-t", "all", "-j", job, "-o", "%T").strip()


def _epochs(run: Path) -> int:
    try:
        return int(json.loads((run / "progress.json").read_text())["epochs_finished"])
    except (OSError, ValueError, KeyError):
        return 0


def _wait(predicate, timeout: float, what: str, poll: float = 0.2) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def _validation_lines(run: Path) -> list[str]:
    return [line for line in (run / "log.txt").read_text().splitlines() if "*** Validation [@Epoch" in line]


def test_a_grid_on_slurm_survives_a_requeue_and_a_preemption_and_equals_the_local_grid(slurm_env, synthetic_root,
                                                                                        tmp_path):
    start = time.monotonic()
    tiny = make_tiny_inputs(synthetic_root, tmp_path / "tiny")
    on_slurm, local = tmp_path / "slurm_grid", tmp_path / "local_grid"
    reference = subprocess.Popen(_launch_argv(tiny, local, "local"), env=slurm_env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    submitted = subprocess.run(_launch_argv(tiny, on_slurm, "slurm"), env=slurm_env, capture_output=True, text=True,
                               timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    jobs = {j["name"]: j["job_id"] for j in json.loads((on_slurm / "jobs.json").read_text())}
    assert set(jobs) == {"pascal_resnet50_fold0", "pascal_resnet50_fold1", "test"}
    assert f"afterok:{jobs['pascal_resnet50_fold0']}:{jobs['pascal_resnet50_fold1']}" in submitted.stdout

    # fold 0: requeued from outside once its first epoch is saved; fold 1: SLURM's preemption signal
    interrupt = {"pascal_resnet50_fold0": ["scontrol", "requeue"], "pascal_resnet50_fold1": ["scancel", "--signal=USR2"]}
    for name, command in interrupt.items():
        run = on_slurm / "runs" / name
        _wait(lambda: _epochs(run) >= 1, 180, f"the first epoch of {name}")
        assert _epochs(run) < NITER, f"{name} finished before it could be interrupted"
        _slurm(slurm_env, *command, jobs[name])
    for name in interrupt:  # SLURM holds a requeued job for 2 minutes (BeginTime); let it go at once
        _wait(lambda: _state(slurm_env, jobs[name]) == "PENDING", 120, f"{name} requeued")
        _slurm(slurm_env, "scontrol", "update", f"JobId={jobs[name]}", "StartTime=now")
    _wait(lambda: _state(slurm_env, jobs["test"]) in ("COMPLETED", "FAILED", "CANCELLED"), 400, "the test job", 1)
    out, _ = reference.communicate(timeout=400)
    assert reference.returncode == 0, out

    for name, job in jobs.items():
        assert _state(slurm_env, job) == "COMPLETED", (name, _slurm(slurm_env, "scontrol", "show", "job", job))
        restarts = re.search(r"Restarts=(\d+)", _slurm(slurm_env, "scontrol", "show", "job", job)).group(1)
        assert restarts == ("0" if name == "test" else "1"), name
    signalled = (on_slurm / "submitit" / f"{jobs['pascal_resnet50_fold1']}_0_log.err").read_text()
    assert "got SIGUSR2: stopping at the next training step" in signalled and "grid job: requeueing job" in signalled

    for name in interrupt:
        run, ref = on_slurm / "runs" / name, local / "runs" / name
        lines = _validation_lines(run)
        assert [line.split("]")[0] for line in lines] == [f"*** Validation [@Epoch {e:02d}" for e in range(NITER)]
        assert lines == _validation_lines(ref), name  # the same numbers as the uninterrupted local run
        log = (run / "log.txt").read_text()
        assert "Resumed: epoch" in log and log.count("==================== Finished Training") == 1
        kept = {p.name for p in run.iterdir()}
        assert {"args.json", "log.txt", "best_model.pt", "last.pt", "progress.json", "tbd"} <= kept
        assert any(n.startswith("args_resume_epoch") for n in kept) and _epochs(run) == NITER
        events = read_scalar_events(run / "tbd" / "runs")
        assert events and all([step for step, _ in values] == list(range(NITER)) for values in events.values())
    assert (on_slurm / "tables.md").read_text() == (local / "tables.md").read_text()
    results = [json.loads((g / "tests" / "pascal_resnet50" / "results.json").read_text()) for g in (on_slurm, local)]
    assert [(r["fold"], r["miou"], r["fb_iou"]) for r in results[0]["runs"]] == \
        [(r["fold"], r["miou"], r["fb_iou"]) for r in results[1]["runs"]]
    status = subprocess.run([sys.executable, str(REPO / "launch.py"), "status", str(on_slurm)], env=slurm_env,
                            capture_output=True, text=True, timeout=60).stdout
    assert status.count("COMPLETED") == 3 and status.count(f"{NITER}/{NITER}") == 2
    print(f"real-SLURM grid test: {time.monotonic() - start:.0f} s")
