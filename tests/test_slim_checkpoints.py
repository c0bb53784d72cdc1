"""Slim checkpoints: last.pt (always) and best_model.pt (--slim-checkpoints) without the frozen backbone.

Through the real train.py and test.py on the tiny split (ResNet50 at 64 px, backbone from a weights file so
that test.py can rebuild it): what the files hold, that test.py reads the weights a slim checkpoint names and
loads the trained model, that other backbone weights are refused in one line naming the flag, and
that a slim best_model.pt of a random backbone says to use a full one.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from engine.args import parse_args
from model import build_model
from model.checkpoint import (BACKBONE_PREFIX, CheckpointMismatchError, backbone_record, backbone_sha256,
                              load_model_state, read_state_dict, slim_state_dict)
from tests.train_helpers import make_tiny_inputs

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slim_run(synthetic_root, module_tmp):
    """One epoch of ResNet50 from a (random) weights file, best_model.pt slim too."""
    root = module_tmp("slim")
    tiny = make_tiny_inputs(synthetic_root, root / "tiny")
    torch.manual_seed(0)
    weights = root / "resnet50_weights.pth"
    torch.save(build_model("resnet50", backbone_weights=None).backbone.state_dict(), weights)
    run_dir = root / "run"
    argv = tiny.argv("--backbone", "resnet50", "--backbone-weights", str(weights), "--logpath", str(run_dir),
                     "--bsz", "3", "--nepisodes", "4", "--seed", "3", "--niter", "1", "--slim-checkpoints")
    assert train.main(parse_args("train", argv))["status"] == "finished"
    return tiny, weights, run_dir, root


def _test_py(tiny, *extra: str, out: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(REPO / "test.py"), *tiny.argv("--backbone", "resnet50", "--logpath", str(out),
                                                             "--nepisodes", "4", "--bsz", "2", *extra)]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO)


def test_both_checkpoints_leave_out_the_backbone_and_name_its_weights(slim_run):
    _, weights, run_dir, _ = slim_run
    for name in ("last.pt", "best_model.pt"):
        state = torch.load(run_dir / name, map_location="cpu", weights_only=True)
        assert not any(key.startswith(BACKBONE_PREFIX) for key in state["model"]), name
        assert state["backbone"]["name"] == "resnet50" and state["backbone"]["weights"] == str(weights)
    torch.manual_seed(0)
    model = build_model("resnet50", backbone_weights=str(weights))
    assert torch.load(run_dir / "last.pt", weights_only=True)["backbone"]["sha256"] == backbone_sha256(model)


def test_test_py_reads_the_named_weights_and_loads_the_trained_model(slim_run):
    tiny, weights, run_dir, root = slim_run
    model = build_model("resnet50", backbone_weights=str(weights))  # what test.py builds from the file's record
    load_model_state(model, run_dir / "best_model.pt")
    last = torch.load(run_dir / "last.pt", weights_only=True)["model"]
    for key, value in model.state_dict().items():  # one epoch: best_model.pt and last.pt hold the same model
        if not key.startswith(BACKBONE_PREFIX):
            assert torch.equal(value, last[key]), key
    slim = _test_py(tiny, "--load", str(run_dir / "best_model.pt"), out=root / "test_slim")
    assert slim.returncode == 0, slim.stderr[-3000:]
    assert any(line.startswith("Fold 0 mIoU:") or "Fold 0 mIoU:" in line for line in slim.stdout.splitlines())
    assert json.loads((root / "test_slim" / "results.json").read_text())["runs"]


def test_other_backbone_weights_are_refused_in_one_line(slim_run, tmp_path):
    tiny, _, run_dir, _ = slim_run
    torch.manual_seed(1)
    other = tmp_path / "other.pth"
    torch.save(build_model("resnet50", backbone_weights=None).backbone.state_dict(), other)
    proc = _test_py(tiny, "--load", str(run_dir / "best_model.pt"), "--backbone-weights", str(other),
                    out=tmp_path / "test_other")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{run_dir / 'best_model.pt'}: slim checkpoint" in proc.stderr
    assert "--backbone-weights " + str(slim_run[1]) in proc.stderr
    assert not (tmp_path / "test_other").exists()


def test_a_random_backbone_cannot_be_rebuilt_and_the_message_says_to_use_a_full_checkpoint():
    torch.manual_seed(0)
    trained = build_model("resnet50", backbone_weights=None)
    state = slim_state_dict(trained, backbone_record(trained, None))
    assert read_state_dict(state).backbone["weights"] is None
    torch.manual_seed(1)
    with pytest.raises(CheckpointMismatchError, match="random backbone weights.*full checkpoint"):
        load_model_state(build_model("resnet50", backbone_weights=None), state)
    torch.manual_seed(0)
    same = load_model_state(build_model("resnet50", backbone_weights=None), state)
    for key, value in trained.state_dict().items():
        assert torch.equal(value, same.state_dict()[key]), key


def test_slim_best_model_of_a_random_backbone_is_refused_before_training(tmp_path, capsys):
    for name in ("CAM_Train", "CAM_Val"):
        (tmp_path / name).mkdir()
    with pytest.raises(SystemExit) as info:
        parse_args("train", ["--datapath", str(tmp_path), "--splitpath", str(tmp_path), "--backbone-weights", "none",
                             "--slim-checkpoints"])
    assert info.value.code == 2
    assert "--slim-checkpoints: not with --backbone-weights none" in capsys.readouterr().err
