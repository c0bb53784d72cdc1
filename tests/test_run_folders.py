"""Runs never mix and nothing is lost: the run-folder policy, resume after SIGKILL at many points, and
TensorBoard serving a run's scalars from the installed ``tensorboard``."""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

import train
from common.distributed import DistInfo
from engine import training
from engine.args import parse_args
from engine.run_folder import INTERRUPTED_LOG_NAME, RunFolderError, flag_differences, open_run_folder
from model import build_model
from model.checkpoint import load_model_state
from tests.test_bad_input import make_mini_pascal
from tests.train_helpers import read_scalar_events

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NITER = 4


def _argv(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["--datapath", str(root), "--splitpath", str(root / "splits"), "--img-size", "64", "--backbone", "resnet50",
            "--backbone-weights", "none", "--device", "cpu", "--nworker", "0", "--bsz", "2", "--nepisodes", "2",
            "--seed", "5", "--logpath", str(run_dir), *extra]


def test_resume_refuses_changed_flags_and_names_them(tmp_path):
    root = make_mini_pascal(tmp_path / "data")
    args = parse_args("train", _argv(root, tmp_path / "run", "--niter", "1"))
    stored = json.loads(json.dumps(vars(args), default=str))
    changed = parse_args("train", _argv(root, tmp_path / "run", "--niter", "3", "--nworker", "2", "--stage", "3",
                                        "--masking", "paper", "--img-size", "96", "--checkpoint-learner", "--resume"))
    assert flag_differences(stored, changed) == ["--img-size 64 -> 96", "--masking 'released' -> 'paper'",
                                                 "--stage 2 -> 3"]



def test_a_left_out_seed_is_no_difference_and_the_resume_check_writes_nothing(tmp_path):
    root = make_mini_pascal(tmp_path / "data")
    stored = json.loads(json.dumps(vars(parse_args("train", _argv(root, tmp_path / "run"))), default=str))
    argv = [a for a in _argv(root, tmp_path / "run", "--resume") if a not in ("--seed", "5")]
    resumed = parse_args("train", argv)
    assert resumed.seed is None and flag_differences(stored, resumed) == []
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "args.json").write_text(json.dumps(stored))
    before = dict(vars(resumed))
    open_run_folder(tmp_path / "run", resumed, DistInfo(), training=True)
    assert vars(resumed) == before  # only checked
    assert flag_differences(stored, parse_args("train", argv + ["--seed", "6"])) == ["--seed 5 -> 6"]


def test_the_seed_is_decided_in_one_place(tmp_path):
    """Given: kept; left out on --resume: the run's own (its args.json); left out: drawn as released."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "args.json").write_text(json.dumps({"seed": 77}))
    assert training.decide_seed(argparse.Namespace(seed=5, resume=True), run_dir, DistInfo()) == 5
    args = argparse.Namespace(seed=None, resume=True)
    assert training.decide_seed(args, run_dir, DistInfo()) == 77 and args.seed == 77
    random.seed(3)
    released = int(random.random() * 1e5)
    random.seed(3)
    args = argparse.Namespace(seed=None, resume=False)
    assert training.decide_seed(args, run_dir, DistInfo()) == released == args.seed


def test_resume_when_the_first_epoch_never_finished(tmp_path):
    root = make_mini_pascal(tmp_path / "data")
    run_dir = tmp_path / "run"

    def interrupt(loss: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if batch_idx == 1:
            raise KeyboardInterrupt("killed in the middle of the first epoch")
        return loss

    with pytest.raises(KeyboardInterrupt):
        train.main(parse_args("train", _argv(root, run_dir, "--niter", "1")), loss_hook=interrupt)
    assert not (run_dir / "last.pt").exists() and (run_dir / "log.txt").stat().st_size > 0
    with pytest.raises(RunFolderError, match="--resume"):  # the same command again: refused, nothing mixed
        train.main(parse_args("train", _argv(root, run_dir, "--niter", "1")))

    result = train.main(parse_args("train", _argv(root, run_dir, "--niter", "1", "--resume")))
    assert result["status"] == "finished"
    log = (run_dir / "log.txt").read_text()
    assert log.count("*** Training [@Epoch 00]") == 1 and log.count("Few-shot Seg. with IMR-HSNet") == 1
    assert "Few-shot Seg. with IMR-HSNet" in (run_dir / INTERRUPTED_LOG_NAME).read_text()  # kept, not lost
    events = read_scalar_events(run_dir / "tbd" / "runs")
    assert [step for step, _ in events["data/miou/val_miou"]] == [0]


def test_bad_input_before_the_first_checkpoint_leaves_no_folder(tmp_path):
    root = make_mini_pascal(tmp_path / "data")
    for path in (root / "CAM_Train").glob("*.pt"):
        path.unlink()
    with pytest.raises(Exception, match="CAM priors"):
        train.main(parse_args("train", _argv(root, tmp_path / "run", "--niter", "1")))
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------------
# SIGKILL at many points, then resume
# ---------------------------------------------------------------------------------------------------------
def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 240) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False when it ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("the kill point was never reached")


def test_sigkill_at_many_points_then_resume_logs_every_epoch_once(tmp_path):
    root = make_mini_pascal(tmp_path / "data")
    run_dir = tmp_path / "run"
    log = run_dir / "log.txt"
    rng = random.Random(0)

    def log_has(text: str) -> Callable[[], bool]:
        return lambda: log.is_file() and text in log.read_text(errors="replace")

    def writing(name: str) -> Callable[[], bool]:
        return lambda: any(run_dir.glob(f".{name}.*.tmp"))

    def after(seconds: float) -> Callable[[], bool]:
        start = time.monotonic()
        return lambda: time.monotonic() - start > seconds

    kill_points: list[tuple[str, Callable[[], bool]]] = [
        ("during the first training epoch", log_has("[Epoch: 00] [Batch: 0001")),
        ("while best_model.pt is written", writing("best_model.pt")),
        ("while last.pt is written", writing("last.pt")),
        ("during a validation pass", log_has("*** Training [@Epoch 02]")),
        ("at a random time", after(rng.uniform(1.0, 6.0))),
        ("at another random time", after(rng.uniform(1.0, 6.0))),
    ]
    killed = []
    for what, ready in kill_points:
        resume = ["--resume"] if (run_dir / "args.json").exists() else []
        if _kill_when(_start(_argv(root, run_dir, "--niter", str(NITER), *resume)), ready):
            killed.append(what)
    assert len(killed) >= 5, killed
    final = subprocess.run([sys.executable, "train.py", *_argv(root, run_dir, "--niter", str(NITER), "--resume")],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]

    text = log.read_text()
    for epoch in range(NITER):
        assert text.count(f"*** Validation [@Epoch {epoch:02d}]") == 1, (epoch, killed)
    events = read_scalar_events(run_dir / "tbd" / "runs")
    for tag in ("data/miou/val_miou", "data/loss/trn_loss"):
        assert [step for step, _ in events[tag]] == list(range(NITER)), tag
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == NITER - 1
    load_model_state(build_model("resnet50", backbone_weights=None), run_dir / "best_model.pt")
    assert not list(run_dir.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------------------
# TensorBoard, as installed by `make`
# ---------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str) -> Optional[object]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
            return json.loads(response.read())
    except OSError:
        return None


def test_a_resumed_session_within_the_same_second_keeps_every_epoch_once(tmp_path):
    # tensorboardX names event files by the second and opens them with "wb": a resumed writer (or its purge
    # marker) created within the second of the killed one's files must neither empty them nor be emptied
    from common.logger import TensorBoardWriter

    def log(writer: TensorBoardWriter, epoch: int, value: float) -> None:
        writer.log_epoch(epoch, {"loss": value, "miou": value, "fb_iou": value},
                         {"loss": value, "miou": value, "fb_iou": value})

    first = TensorBoardWriter(tmp_path)
    for epoch in range(3):
        log(first, epoch, 1.0 + epoch)
    first.close()
    resumed = TensorBoardWriter(tmp_path, purge_step=1)  # last.pt held epoch 0: epochs 1 and 2 are redone
    for epoch in (1, 2, 3):
        log(resumed, epoch, 10.0 + epoch)
    resumed.close()

    events = read_scalar_events(tmp_path / "tbd" / "runs")
    for tag in ("data/loss/trn_loss", "data/miou/val_miou"):
        assert events[tag] == [(0, 1.0), (1, 11.0), (2, 12.0), (3, 13.0)], tag


def test_an_epochs_scalars_are_on_disk_when_log_epoch_returns(tmp_path):
    # killed right after log_epoch (where train.py then writes its checkpoint): nothing of the epoch is lost
    script = ("import os, signal, sys\nfrom pathlib import Path\nfrom common.logger import TensorBoardWriter\n"
              "writer = TensorBoardWriter(Path(sys.argv[1]))\n"
              "writer.log_epoch(0, {'loss': 1.0, 'miou': 2.0, 'fb_iou': 3.0}, {'loss': 4.0, 'miou': 5.0, 'fb_iou': 6.0})\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    events = read_scalar_events(tmp_path / "tbd" / "runs")
    assert {tag: values for tag, values in events.items()} == {
        "data/loss/trn_loss": [(0, 1.0)], "data/miou/trn_miou": [(0, 2.0)], "data/fb_iou/trn_fb_iou": [(0, 3.0)],
        "data/loss/val_loss": [(0, 4.0)], "data/miou/val_miou": [(0, 5.0)], "data/fb_iou/val_fb_iou": [(0, 6.0)]}


def test_tensorboard_serves_the_runs_scalars(tmp_path):
    tensorboard = Path(sys.executable).parent / "tensorboard"
    assert tensorboard.is_file(), "tensorboard is a runtime requirement (requirements.txt)"
    root = make_mini_pascal(tmp_path / "data")
    run_dir = tmp_path / "run"
    train.main(parse_args("train", _argv(root, run_dir, "--niter", "2")))

    port = _free_port()
    proc = subprocess.Popen([str(tensorboard), "--logdir", str(run_dir), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/data/plugin/scalars"
        tags = None
        end = time.monotonic() + 90
        while time.monotonic() < end and not tags:
            tags = _get_json(f"{base}/tags")
            time.sleep(0.5)
        assert tags, "tensorboard did not answer within 90 s"
        miou_runs = sorted(run for run, run_tags in tags.items() if "data/miou" in run_tags)
        assert [run.rsplit("/", 1)[-1] for run in miou_runs] == ["trn_miou", "val_miou"], tags
        for run in miou_runs:
            query = urllib.parse.urlencode({"run": run, "tag": "data/miou"})
            points = _get_json(f"{base}/scalars?{query}")
            assert [step for _, step, _ in points] == [0, 1], (run, points)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
