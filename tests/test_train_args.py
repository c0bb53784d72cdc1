"""Flags of train.py/test.py (engine.args), run folders, checkpoint RNG state and logging set-up."""
from __future__ import annotations

import datetime
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from common.paths import LOG_ROOT
from engine import run_checkpoint as ckpt
from engine.args import build_parser, parse_args, resolve_run_dir
from model.checkpoint import released_state_dict
from common.logger import setup_logging


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    for name in ("CAM_Train", "CAM_Val", "CAM_COCO"):
        (tmp_path / name).mkdir()
    return tmp_path


def test_released_defaults():
    train = build_parser("train").parse_args([])
    assert (train.benchmark, train.bsz, train.lr, train.niter, train.nworker, train.fold, train.stage,
            train.backbone, train.logpath) == ("pascal", 40, 4e-4, 400, 8, 0, 2, "resnet50", "")
    test = build_parser("test").parse_args([])
    assert (test.bsz, test.nshots, test.folds, test.visualize, test.use_original_imgsize, test.seeds) == \
        (10, [1], [0], False, False, [0])
    assert "--traincampath" in build_parser("train").format_help()


def test_paths_resolved_and_cam_defaults(data_root, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    args = parse_args("train", ["--datapath", ".", "--backbone-weights", "none"])
    assert Path(args.datapath) == data_root.resolve()
    assert Path(args.traincampath) == data_root / "CAM_Train" and Path(args.valcampath) == data_root / "CAM_Val"
    assert args.backbone_weights is None
    coco = parse_args("train", ["--datapath", str(data_root), "--benchmark", "coco"])
    assert coco.traincampath == coco.valcampath == str(data_root / "CAM_COCO")


@pytest.mark.parametrize("script,argv,needle", [
    ("train", ["--fold", "4"], "--fold"),
    ("train", ["--bsz", "0"], "--bsz"),
    ("train", ["--lr", "0"], "--lr"),
    ("train", ["--backbone", "resnet18"], "--backbone"),
    ("test", ["--nshot", "0", "--load", "__FILE__"], "--nshot"),
    ("test", ["--load", "missing/best_model.pt"], "--load"),
    ("test", [], "--load"),
    ("test", ["--load", "__FILE__", "--use_original_imgsize"], "--bsz 1"),
    ("train", ["--datapath", "__NOPE__"], "--datapath"),
    ("train", ["--valcampath", "__NOPE__"], "--valcampath"),
    ("train", ["--benchmark", "coco", "--traincampath", "a", "--valcampath", "b"], "one CAM folder"),
])
def test_bad_flags_name_the_flag(script, argv, needle, data_root, capsys):
    ckpt_file = data_root / "best_model.pt"
    ckpt_file.write_bytes(b"x")
    argv = [str(ckpt_file) if a == "__FILE__" else str(data_root / "nope") if a == "__NOPE__" else a for a in argv]
    if "--datapath" not in argv:
        argv += ["--datapath", str(data_root)]
    with pytest.raises(SystemExit) as exc:
        parse_args(script, argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_missing_default_datapath_is_reported(monkeypatch, capsys, tmp_path):
    import engine.args as cargs

    monkeypatch.setattr(cargs, "DEFAULT_DATAPATH", tmp_path / "Datasets_HSN")
    with pytest.raises(SystemExit):
        parse_args("train", [])
    err = capsys.readouterr().err
    assert "--datapath" in err and "Datasets_HSN" in err and "(default)" in err


def test_run_dir_rules(tmp_path):
    now = datetime.datetime(2024, 3, 1, 12, 34, 56)
    assert resolve_run_dir("exp", training=True) == LOG_ROOT / "exp.log"
    assert resolve_run_dir("", training=True, now=now) == LOG_ROOT / "_0301_123456.log"
    assert resolve_run_dir(str(tmp_path), training=True) == tmp_path
    assert resolve_run_dir("", training=False, load="logs/exp.log/best_model.pt", now=now) == \
        LOG_ROOT / "_TEST_exp_0301_123456.log"


def test_rng_state_roundtrip_through_file(tmp_path):
    from common.io import atomic_torch_save

    atomic_torch_save({"rng": ckpt.rng_state()}, tmp_path / "s.pt")
    draws = (random.random(), float(np.random.rand()), float(torch.rand(())))
    ckpt.set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == draws


def test_released_state_dict_prefix():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert set(released_state_dict(torch.nn.DataParallel(net))) == {"module.0.weight", "module.0.bias"}
    assert set(released_state_dict(net)) == {"module.0.weight", "module.0.bias"}


def test_setup_logging_twice_does_not_duplicate(tmp_path, capsys):
    setup_logging(tmp_path)
    setup_logging(tmp_path)
    logging.getLogger("x").info("hello once")
    assert capsys.readouterr().out.count("hello once") == 1
    assert (tmp_path / "log.txt").read_text().count("hello once") == 1
    setup_logging(None)
