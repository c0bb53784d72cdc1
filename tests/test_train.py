"""train.py on a tiny synthetic PASCAL split (64 px, random VGG16, CPU): events, checkpoints, resume, NaN stop."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import train
from engine.args import parse_args
from tests.train_helpers import make_tiny_inputs, read_scalar_events

pytestmark = pytest.mark.slow

RELEASED_TAGS = {f"data/{group}/{split}_{group}" for group in ("loss", "miou", "fb_iou") for split in ("trn", "val")}


@pytest.fixture(scope="module")
def tiny(synthetic_root, module_tmp):
    return make_tiny_inputs(synthetic_root, module_tmp("tiny"))


def _args(tiny, run_dir: Path, *extra: str):
    return parse_args("train", tiny.argv("--logpath", str(run_dir), "--bsz", "3", "--nepisodes", "4",
                                         "--seed", "7", "--lr", "1e-3", *extra))


@pytest.fixture(scope="module")
def full_run(tiny, module_tmp):
    """An uninterrupted 2-epoch run."""
    run_dir = module_tmp("full") / "run"
    result = train.main(_args(tiny, run_dir, "--niter", "2"))
    return run_dir, result


def test_short_run_writes_events_and_checkpoints(full_run):
    run_dir, result = full_run
    assert result["status"] == "finished" and result["epochs"] == 2
    events = read_scalar_events(run_dir / "tbd" / "runs")
    assert RELEASED_TAGS <= set(events)
    for tag in RELEASED_TAGS:
        assert [step for step, _ in events[tag]] == [0, 1], tag
        assert all(math.isfinite(v) for _, v in events[tag])
    best = torch.load(run_dir / "best_model.pt", map_location="cpu", weights_only=True)
    assert best and all(key.startswith("module.") for key in best)
    last = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1 and last["best_miou"] == pytest.approx(result["best_miou"])
    assert {"python", "numpy", "torch"} <= set(last["rng"]) and last["optimizer"]["state"]
    assert last["args"]["seed"] == 7
    assert json.loads((run_dir / "args.json").read_text())["img_size"] == 64
    log = (run_dir / "log.txt").read_text()
    assert "*** Validation [@Epoch 01]" in log and "Finished Training" in log

    from model import build_model
    from model.checkpoint import load_model_state

    fresh = build_model("vgg16", backbone_weights=None)
    load_model_state(fresh, run_dir / "best_model.pt")  # released-format keys load into the bare model


def test_existing_run_needs_resume(full_run, tiny):
    run_dir, _ = full_run
    with pytest.raises(FileExistsError, match="--resume"):
        train.main(_args(tiny, run_dir, "--niter", "2"))


def test_resume_after_crash_equals_uninterrupted_run(full_run, tiny, tmp_path):
    run_dir = tmp_path / "crashed"

    def crash(epoch: int) -> None:
        if epoch == 0:
            raise KeyboardInterrupt("simulated kill after the first epoch")

    with pytest.raises(KeyboardInterrupt):
        train.main(_args(tiny, run_dir, "--niter", "2"), after_epoch=crash)
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 0
    result = train.main(_args(tiny, run_dir, "--niter", "2", "--resume"))
    assert result["status"] == "finished"

    events = read_scalar_events(run_dir / "tbd" / "runs")
    full_events = read_scalar_events(full_run[0] / "tbd" / "runs")
    for tag in RELEASED_TAGS:
        assert [step for step, _ in events[tag]] == [0, 1], tag
        assert [v for _, v in events[tag]] == pytest.approx([v for _, v in full_events[tag]]), tag
    log = (run_dir / "log.txt").read_text()
    assert log.count("*** Training [@Epoch 00]") == 1 and log.count("*** Training [@Epoch 01]") == 1
    ours = torch.load(run_dir / "last.pt", weights_only=True)["model"]
    full = torch.load(full_run[0] / "last.pt", weights_only=True)["model"]
    for key in full:
        torch.testing.assert_close(ours[key], full[key], rtol=0, atol=1e-6, msg=key)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny, tmp_path, capsys):
    run_dir = tmp_path / "nan"

    state = {"epochs_done": 0}

    def poison(loss: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return loss * float("nan") if state["epochs_done"] >= 1 and batch_idx == 1 else loss

    def count(epoch: int) -> None:
        state["epochs_done"] += 1

    result = train.main(_args(tiny, run_dir, "--niter", "3"), loss_hook=poison, after_epoch=count)
    assert result["status"] == "nonfinite_loss"
    last = torch.load(run_dir / "last.pt", weights_only=True)
    assert last["epoch"] == 0 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert (run_dir / "best_model.pt").exists()
    assert "non-finite loss (nan)" in capsys.readouterr().out
