"""launch.py grid/status (engine.grid, engine.cluster, engine.grid_jobs): grid expansion, --dry-run, bad input,
the preemption watch, and (slow) whole grids through submitit's local executor: the dependent test job, status,
and a grid folder interrupted and relaunched submitting only its unfinished cells. The real-SLURM run is in
tests/test_grid_slurm.py."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

import launch
from engine import cluster, grid as grid_lib, grid_jobs, training
from engine.args import parse_args
from engine.grid import Cell, GridSpec
from tests.test_bad_input import make_mini_pascal


def _train_flags(root: Path, *extra: str) -> list[str]:
    return ["--datapath", str(root), "--splitpath", str(root / "splits"), "--img-size", "64",
            "--backbone-weights", "none", "--device", "cpu", "--nworker", "0", "--bsz", "2", "--nepisodes", "2",
            *extra]


def _grid_argv(root: Path, grid: Path, *extra: str, niter: int = 1, bsz: int = 2) -> list[str]:
    return ["grid", "--benchmark", "pascal", "--backbone", "resnet50", "--fold", "0", "1", "--nshot", "1",
            "--test-nepisodes", "2", "--test-bsz", "2", "--bootstrap", "10", "--gpus-per-job", "0",
            "--cpus-per-task", "1", "--grid-dir", str(grid), *extra, *_train_flags(root, "--niter", str(niter), "--bsz", str(bsz))]


def _spec(root: Path, niter: int = 1, bsz: int = 2) -> GridSpec:
    """The grid that :func:`_grid_argv` asks for."""
    return GridSpec(("pascal",), ("resnet50",), (0, 1), nshots=(1,), test_nepisodes=2, test_bsz=2, bootstrap=10,
                    train_flags=tuple(_train_flags(root, "--niter", str(niter), "--bsz", str(bsz))))


@pytest.fixture
def mini(tmp_path) -> Path:
    return make_mini_pascal(tmp_path / "data")


def test_the_paper_grid_expands_to_16_cells_with_the_released_settings():
    spec = GridSpec(benchmarks=("pascal", "coco"), backbones=("vgg16", "resnet50"), folds=(0, 1, 2, 3))
    cells = grid_lib.expand(spec)
    assert len(cells) == 16 and len({c.name for c in cells}) == 16
    assert cells[0].name == "pascal_vgg16_fold0" and cells[-1].name == "coco_resnet50_fold3"
    grid = Path("/g")
    pascal = grid_lib.cell_train_argv(spec, cells[0], grid)
    assert pascal[:6] == ["--benchmark", "pascal", "--backbone", "vgg16", "--fold", "0"]
    assert " --lr 4e-4 --bsz 40 --stage 2 --seed 0 " in " ".join(pascal) + " "
    assert pascal[-2:] == ["--logpath", "/g/runs/pascal_vgg16_fold0"]
    coco = grid_lib.cell_train_argv(spec, Cell("coco", "resnet50", 2), grid)
    assert " --lr 2e-4 --bsz 20 --stage 3 " in " ".join(coco)
    # flags given to the grid win over the released settings, and are not given twice
    mine = GridSpec(("pascal",), ("vgg16",), (0,), train_flags=("--lr", "1e-3", "--seed=7"))
    argv = grid_lib.cell_train_argv(mine, Cell("pascal", "vgg16", 0), grid)
    assert argv.count("--lr") == 1 and "1e-3" in argv and "--seed" not in argv and "--seed=7" in argv
    # FSS-1000 has no folds: one cell per backbone; one test sweep per (benchmark, backbone)
    fss = GridSpec(("fss", "pascal"), ("resnet50",), (0, 1))
    assert [c.name for c in grid_lib.expand(fss)] == ["fss_resnet50", "pascal_resnet50_fold0", "pascal_resnet50_fold1"]
    assert [(g.name, g.folds) for g in grid_lib.test_groups(fss)] == [("fss_resnet50", (0,)),
                                                                      ("pascal_resnet50", (0, 1))]


def test_the_test_sweep_takes_its_cells_data_and_model_flags(mini, tmp_path):
    spec = GridSpec(("pascal",), ("resnet50",), (0, 1), train_flags=tuple(_train_flags(mini, "--amp", "bf16")),
                    nshots=(1, 5), test_nepisodes=30)
    grid = tmp_path / "g"
    group = grid_lib.test_groups(spec)[0]
    args = grid_lib.resolve_cell(spec, group.cells()[0], grid)
    argv = grid_lib.group_test_argv(spec, group, grid, args)
    text = " ".join(argv)
    assert f"--load {grid.absolute()}/runs/pascal_resnet50_fold{{fold}}/best_model.pt" in text
    assert "--fold 0 1 --nshot 1 5" in text and "--nepisodes 30" in text and "--stage 2" in text
    assert "--amp bf16" in text and "--img-size 64" in text and "--bsz" not in text
    assert argv[-2:] == ["--logpath", str(grid.absolute() / "tests" / "pascal_resnet50")]


@pytest.mark.parametrize("value,minutes", [("90", 90), ("24:00:00", 1440), ("1-12", 2160), ("0:30", 1),
                                           ("2-00:00:30", 2881)])
def test_time_limits_in_slurm_forms(value, minutes):
    assert cluster.time_minutes(value) == minutes


def _fake_slurm(monkeypatch, partitions=("gpu", "cpu")):
    monkeypatch.setattr(cluster.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(cluster, "slurm_partitions", lambda: list(partitions))
    monkeypatch.setattr(cluster, "slurm_states", lambda ids: {i: "UNKNOWN" for i in ids})


def test_dry_run_prints_every_job_and_its_sbatch_flags_and_submits_nothing(mini, tmp_path, monkeypatch, capsys):
    _fake_slurm(monkeypatch)
    grid = tmp_path / "g"
    code = launch.main(_grid_argv(mini, grid, "--dry-run", "--partition", "gpu", "--account", "lab", "--qos", "high",
                                  "--constraint", "a100", "--time", "24:00:00", "--gpus-per-job", "4",
                                  "--test-bsz", "4", "--mem-gb", "200", bsz=8))
    out = capsys.readouterr().out
    assert code == 0 and not grid.exists()
    assert "2 training cells, 2 to submit" in out and out.count("python train.py --benchmark pascal") == 2
    assert ("--job-name=pascal_resnet50_fold1 --time=1440 --nodes=1 --ntasks-per-node=4 --cpus-per-task=1 "
            "--signal=USR2@120 --gpus-per-node=4 --partition=gpu --account=lab --qos=high --constraint=a100 "
            "--mem=200GB --requeue") in out
    assert "python test.py --benchmark pascal --backbone resnet50" in out
    assert "--ntasks-per-node=1" in out and "--gpus-per-node=1" in out
    assert "--dependency=afterok:<the training jobs above>" in out and out.rstrip().endswith("nothing submitted")


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def test_an_unknown_partition_and_a_missing_sbatch_are_one_line_and_exit_2(mini, tmp_path, monkeypatch, capsys):
    _fake_slurm(monkeypatch, partitions=("gpu",))
    assert launch.cli(_grid_argv(mini, tmp_path / "g", "--partition", "gpux")) == 2
    assert _one_error_line(capsys) == "launch.py: error: --partition gpux: no such SLURM partition; sinfo lists gpu"
    monkeypatch.setattr(cluster.shutil, "which", lambda name: None)
    assert launch.cli(_grid_argv(mini, tmp_path / "g")) == 2
    line = _one_error_line(capsys)
    assert line.startswith("launch.py: error: sbatch not found") and "--executor local" in line
    assert not (tmp_path / "g").exists()


def test_a_grid_folder_holding_another_grid_or_other_files_is_refused(mini, tmp_path, capsys):
    grid = tmp_path / "g"
    spec = GridSpec(("pascal",), ("resnet50",), (0, 1, 2, 3))
    grid_lib.write_spec(grid, spec, "python launch.py grid ...")
    before = sorted(p.name for p in grid.iterdir())
    assert launch.cli(_grid_argv(mini, grid, "--executor", "local")) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"launch.py: error: {grid.absolute()} holds another grid (folds [0, 1, 2, 3] -> [0, 1]")
    assert sorted(p.name for p in grid.iterdir()) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    assert launch.cli(_grid_argv(mini, other, "--executor", "local")) == 2
    assert "holds files but no grid.json" in _one_error_line(capsys)
    assert (other / "notes.txt").read_text() == "mine\n"


def test_a_cell_folder_holding_another_run_is_refused_and_kept(mini, tmp_path, capsys):
    grid = tmp_path / "g"
    grid_lib.write_spec(grid.absolute(), _spec(mini), "python launch.py grid ...")
    run = grid / "runs" / "pascal_resnet50_fold1"
    run.mkdir(parents=True)
    stored = vars(parse_args("train", _train_flags(mini, "--niter", "1", "--fold", "1", "--lr", "1e-3",
                                                   "--logpath", str(run))))
    (run / "args.json").write_text(json.dumps(stored, default=str))
    (run / "log.txt").write_text("someone's run\n")
    assert launch.cli(_grid_argv(mini, grid, "--executor", "local")) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"launch.py: error: cell run folder {run.absolute()} holds another run (--lr 0.001 -> 0.0004")
    assert (run / "log.txt").read_text() == "someone's run\n" and not (grid / "jobs.json").exists()
    assert launch.cli(_grid_argv(mini, grid, "--executor", "local", "--logpath", "x")) == 2  # the grid sets it
    assert "leave it out of the train.py flags" in _one_error_line(capsys)


def test_the_preemption_watch_stops_every_rank_at_a_step_and_requeues_once(monkeypatch):
    calls = []
    watch = grid_jobs.PreemptionWatch(grace_s=0.2, requeue=lambda: calls.append(1) or True, rank=0)
    previous = signal.getsignal(signal.SIGUSR2)
    try:
        watch.install()
        loss = torch.tensor(1.0)
        assert watch.loss_hook(loss, 0) is loss
        os.kill(os.getpid(), signal.SIGUSR2)
        with pytest.raises(grid_jobs.StopRequested, match="step 3"):
            watch.loss_hook(loss, 3)
        time.sleep(0.5)  # no step came within the grace period: requeued by the timer, once
        assert watch.requeue_once() and calls == [1]
    finally:
        watch.cancel()
        signal.signal(signal.SIGUSR2, previous)


def test_a_job_is_requeued_at_most_max_requeues_times(monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(grid_jobs.subprocess, "run", lambda cmd, **kw: ran.append(cmd) or
                        type("Done", (), {"returncode": 0, "stderr": ""})())
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert grid_jobs._slurm_requeue(3) and ran == [["scontrol", "requeue", "42"]]
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
    assert not grid_jobs._slurm_requeue(3) and len(ran) == 1
    assert "requeued 3 times already (--max-requeues 3)" in capsys.readouterr().err
    # SLURM stops the job's steps as it requeues the job: scontrol, a child of the job, may die of a signal
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    monkeypatch.setattr(grid_jobs.subprocess, "run", lambda cmd, **kw: type("Done", (), {"returncode": -15,
                                                                                         "stderr": ""})())
    assert grid_jobs._slurm_requeue(3)
    assert "grid job: requeueing job 42 (restart 1 of at most 3)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_local_grid_runs_its_test_job_after_training_and_shows_its_status(mini, tmp_path, capsys):
    grid = tmp_path / "g"
    assert launch.cli(_grid_argv(mini, grid, "--executor", "local", "--parallel", "2")) == 0
    out = capsys.readouterr().out
    assert "started test" in out and "test: COMPLETED" in out
    results = json.loads((grid / "tests" / "pascal_resnet50" / "results.json").read_text())
    assert results["complete"] and [r["fold"] for r in results["runs"]] == [0, 1]
    tables = (grid / "tables.md").read_text()
    assert "| 1-shot | ours |" in tables and "not finished" not in tables
    jobs = json.loads((grid / "jobs.json").read_text())
    assert [j["name"] for j in jobs] == ["pascal_resnet50_fold0", "pascal_resnet50_fold1", "test"]
    assert {j["state"] for j in jobs} == {"COMPLETED"}

    assert launch.main(["status", str(grid)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[:5] == ["cell", "job", "state", "epochs", "best"]
    fold0 = rows[1].split()
    assert fold0[:4] == ["pascal_resnet50_fold0", jobs[0]["job_id"], "COMPLETED", "1/1"]
    float(fold0[4])  # the best validation mIoU so far
    assert rows[3].split()[:5] == ["test", "pascal_resnet50", jobs[2]["job_id"], "COMPLETED", "complete"]
    # the same command again: everything is done, nothing is submitted
    assert launch.cli(_grid_argv(mini, grid, "--executor", "local")) == 0
    assert "0 to submit" in capsys.readouterr().out
    assert len(json.loads((grid / "jobs.json").read_text())) == 3


@pytest.mark.slow
def test_an_interrupted_grid_relaunched_submits_only_its_unfinished_cells(mini, tmp_path, capsys, request):
    """Before the interruption fold 0 finished and fold 1 stopped after its first of two epochs; the relaunch
    leaves fold 0 alone, resumes fold 1 from its last.pt and runs the test job."""
    grid = tmp_path / "g"
    argv = _grid_argv(mini, grid, "--executor", "local", niter=2)
    spec = _spec(mini, niter=2)
    grid_lib.write_spec(grid.absolute(), spec, "python launch.py " + " ".join(argv))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the grid's jobs (--cpus-per-task 1); two threads on a loaded 2-core CPU: 4x slower
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    assert training.train(grid_lib.resolve_cell(spec, Cell("pascal", "resnet50", 0), grid.absolute()))["status"] == \
        "finished"

    def crash(epoch: int) -> None:
        raise KeyboardInterrupt("the node went away")

    with pytest.raises(KeyboardInterrupt):
        training.train(grid_lib.resolve_cell(spec, Cell("pascal", "resnet50", 1), grid.absolute()), after_epoch=crash)
    fold0 = grid / "runs" / "pascal_resnet50_fold0"
    kept = {p.name: p.stat().st_mtime_ns for p in fold0.iterdir()}

    assert launch.cli(argv) == 0
    out = capsys.readouterr().out
    assert "2 training cells, 1 to submit" in out
    assert "pascal_resnet50_fold0: finished: skipped" in out and "pascal_resnet50_fold1: resume" in out
    assert [j["name"] for j in json.loads((grid / "jobs.json").read_text())] == ["pascal_resnet50_fold1", "test"]
    assert {p.name: p.stat().st_mtime_ns for p in fold0.iterdir()} == kept
    log = (grid / "runs" / "pascal_resnet50_fold1" / "log.txt").read_text()
    assert log.count("*** Validation [@Epoch 00]") == 1 and log.count("*** Validation [@Epoch 01]") == 1
    assert "Resumed: epoch 0 done" in log
    assert json.loads((grid / "tests" / "pascal_resnet50" / "results.json").read_text())["complete"]
