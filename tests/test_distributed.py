"""common.distributed: episode sharding, and (slow) 2-process gloo runs of train.py and test.py under torchrun."""
from __future__ import annotations

import pytest
import torch

from common.distributed import DistInfo, EpisodeSampler, local_batch_size, seed_for


@pytest.mark.parametrize("length,world", [(10, 2), (11, 2), (7, 3), (1, 2)])
def test_eval_sharding_covers_every_episode_once(length, world):
    shards = [EpisodeSampler(length, rank=r, world_size=world).indices() for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(length))
    assert [len(EpisodeSampler(length, rank=r, world_size=world)) for r in range(world)] == [len(s) for s in shards]


def test_train_sharding_pads_shuffles_per_epoch_and_agrees_across_ranks():
    samplers = [EpisodeSampler(11, rank=r, world_size=2, shuffle=True, pad=True, seed=5) for r in range(2)]
    first = [s.indices() for s in samplers]
    assert [len(x) for x in first] == [6, 6] and set(first[0]) | set(first[1]) == set(range(11))
    for s in samplers:
        s.set_epoch(1)
    assert [s.indices() for s in samplers] != first
    single = EpisodeSampler(11, shuffle=True, seed=5)
    assert sorted(single.indices()) == list(range(11)) and len(single) == 11


def test_local_batch_and_seeds():
    assert local_batch_size(8, DistInfo(rank=0, world_size=2, distributed=True)) == 4
    with pytest.raises(ValueError, match="--bsz 5"):
        local_batch_size(5, DistInfo(rank=0, world_size=2, distributed=True))
    assert seed_for(3, 1) != seed_for(3, 2) and 0 <= seed_for(10**9, 10**6) < 2**31


def test_meter_all_reduce_is_noop_without_group():
    from common.evaluation import IoUMeter

    meter = IoUMeter([0], 20)
    meter.update(torch.ones(2, 1), torch.ones(2, 1), torch.tensor([0]), 1.0)
    meter.all_reduce()
    assert meter.compute_iou() == (100.0, 100.0)


WORKER = r'''
"""Run by torchrun: one DDP gradient step on a fixed global batch, then a short train.py run."""
import json, os, sys
from pathlib import Path
sys.path.insert(0, os.environ["REPO_ROOT"])
import torch
import torch.distributed as dist
import train
from engine.args import parse_args
from common.distributed import init_distributed
from engine.loops import forward_1shot
from common.seed import fix_randseed
from tests.test_distributed import global_batch, fresh_model

argv, out = json.loads(sys.argv[1]), Path(sys.argv[2])
args = parse_args("train", argv)
info, device = init_distributed(torch.device("cpu"))
batch = global_batch(args)
half = batch["query_img"].shape[0] // info.world_size
local = {k: v[info.rank * half:(info.rank + 1) * half] for k, v in batch.items() if torch.is_tensor(v)}
model = fresh_model()
ddp = torch.nn.parallel.DistributedDataParallel(model)
model.train_mode()
_, loss = forward_1shot(ddp, local, args.stage)
loss.backward()
# the same global batch as --micro-bsz 1 passes per rank: gradients synchronised on the last pass only
from common.evaluation import IoUMeter
from engine.loops import train_epoch
micro_model = fresh_model()
micro_ddp = torch.nn.parallel.DistributedDataParallel(micro_model)
optimizer = torch.optim.SGD([p for p in micro_model.parameters() if p.requires_grad], lr=0.0)
train_epoch(micro_ddp, [local], optimizer, IoUMeter(list(range(20)), 20), epoch=0, stage=args.stage,
            device=torch.device("cpu"), micro_bsz=1, log_every=0, progress=False)
if info.rank == 0:
    torch.save({"batch": {k: v for k, v in batch.items() if torch.is_tensor(v)},
                "grads": {n: p.grad for n, p in model.named_parameters() if p.grad is not None},
                "micro_grads": {n: p.grad for n, p in micro_model.named_parameters() if p.grad is not None}},
               out / "ddp.pt")
dist.barrier()
result = train.main(args)
if info.rank == 0:
    (out / "done.json").write_text(json.dumps({"status": result["status"], "best_miou": result["best_miou"]}))
'''


def fresh_model():
    """A seeded random VGG16 IMR-HSNet with its backbone frozen (as train.py does)."""
    from model import build_model

    torch.manual_seed(0)
    model = build_model("vgg16", backbone_weights=None)
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    return model


def global_batch(args, size: int = 4):
    """The first ``size`` training episodes of the tiny split, drawn with seed 0 (same on every rank)."""
    from data.dataset import build_dataset

    fix = __import__("common.seed", fromlist=["fix_randseed"]).fix_randseed
    fix(0)
    dataset = build_dataset("pascal", datapath=args.datapath, fold=args.fold, split="trn", shot=1,
                            img_size=args.img_size, cam_train_path=args.traincampath, cam_val_path=args.valcampath,
                            splitpath=args.splitpath, nepisodes=args.nepisodes, seed=0)
    return torch.utils.data.default_collate([dataset[i] for i in range(size)])


@pytest.mark.slow
def test_torchrun_two_ranks_gloo_trains_and_averages_gradients(synthetic_root, tmp_path, repo_root):
    import json
    import os
    import subprocess
    import sys

    from engine.args import parse_args
    from engine.loops import forward_1shot
    from tests.train_helpers import make_tiny_inputs

    tiny = make_tiny_inputs(synthetic_root, tmp_path / "tiny")
    argv = tiny.argv("--logpath", str(tmp_path / "run"), "--bsz", "4", "--nepisodes", "4", "--niter", "1",
                     "--seed", "3")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "REPO_ROOT": str(repo_root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--standalone", str(script), json.dumps(argv), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((tmp_path / "done.json").read_text())["status"] == "finished"
    assert (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "best_model.pt").exists()
    assert "*** Validation [@Epoch 00]" in (tmp_path / "run" / "log.txt").read_text()

    saved = torch.load(tmp_path / "ddp.pt", weights_only=True)
    model = fresh_model()
    model.train_mode()
    _, loss = forward_1shot(model, saved["batch"], parse_args("train", argv).stage)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(grads) == set(saved["grads"]) == set(saved["micro_grads"]) and grads
    for name, grad in grads.items():
        torch.testing.assert_close(saved["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(saved["micro_grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)  # --micro-bsz


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch_two_ranks(argv: list[str], repo_root, timeout: float = 120) -> tuple[list[int], list[str], float]:
    """``train.py argv`` as ranks 0 and 1 of a gloo group started by hand (no torchrun agent that would kill
    the other rank): their exit codes, outputs and the wall time until both ended."""
    import os
    import subprocess
    import sys
    import time

    port = str(_free_port())
    procs = []
    start = time.perf_counter()
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        procs.append(subprocess.Popen([sys.executable, "train.py", *argv], cwd=repo_root, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [proc.communicate(timeout=timeout)[0] for proc in procs]
    return [proc.returncode for proc in procs], outputs, time.perf_counter() - start


@pytest.mark.slow
def test_an_error_on_rank_1_stops_both_ranks_promptly(tmp_path, repo_root):
    """Rank 1 reads a truncated CAM that only its validation shard needs: it names the file and exits 2; rank 0,
    waiting for it in a collective, stops too instead of waiting for the 30-minute process-group timeout."""
    from data.dataset import build_dataset
    from tests.test_bad_input import make_mini_pascal

    root = make_mini_pascal(tmp_path / "data")
    common = dict(datapath=root, fold=0, split="val", img_size=64, splitpath=root / "splits", nepisodes=2, seed=0)
    episodes = build_dataset("pascal", **common).episodes
    rank0_names = {episodes[0].query, *episodes[0].supports}
    name = next(n for n in (episodes[1].query, *episodes[1].supports) if n not in rank0_names)
    bad = root / "CAM_Val" / f"{name}--0.pt"
    bad.write_bytes(bad.read_bytes()[:40])
    argv = ["--datapath", str(root), "--splitpath", str(root / "splits"), "--img-size", "64", "--backbone", "vgg16",
            "--backbone-weights", "none", "--device", "cpu", "--nworker", "0", "--bsz", "2", "--nepisodes", "2",
            "--niter", "1", "--seed", "0", "--logpath", str(tmp_path / "run")]

    codes, outputs, seconds = _launch_two_ranks(argv, repo_root)

    assert codes == [2, 2], outputs
    assert seconds < 60
    assert f"[rank 1] error: cannot read CAM {bad}" in outputs[1]
    assert "[rank 0] error: stopped because another rank stopped" in outputs[0]
    assert not any("Traceback" in out for out in outputs), outputs


@pytest.mark.slow
def test_a_used_run_folder_stops_every_rank(tmp_path, repo_root):
    """The run-folder check is decided on rank 0 and raised on every rank (before: rank 1 waited 30 minutes)."""
    from tests.test_bad_input import make_mini_pascal

    root = make_mini_pascal(tmp_path / "data")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.txt").write_text("an earlier run\n")
    argv = ["--datapath", str(root), "--splitpath", str(root / "splits"), "--img-size", "64", "--backbone", "vgg16",
            "--backbone-weights", "none", "--device", "cpu", "--nworker", "0", "--bsz", "2", "--logpath",
            str(tmp_path / "run")]

    codes, outputs, seconds = _launch_two_ranks(argv, repo_root)

    assert codes == [2, 2] and seconds < 60, outputs
    assert "already holds a run" in outputs[0] and "already holds a run" not in outputs[1]  # said once
    assert not any("Traceback" in out for out in outputs), outputs


@pytest.mark.slow
def test_torchrun_test_py_keeps_every_episode_of_every_rank(synthetic_root, tmp_path, repo_root):
    """test.py under torchrun: the per-episode records gathered from two gloo ranks are the single process's,
    episode for episode, and so are the numbers and intervals; compare.py of the two finds exactly 0."""
    import json
    import os
    import subprocess
    import sys

    import numpy as np

    import test as test_script
    from engine import run_checkpoint as ckpt
    from engine.episode_records import read_run
    from model import build_model
    from tests.train_helpers import make_tiny_inputs

    tiny = make_tiny_inputs(synthetic_root, tmp_path / "tiny", per_class=3)
    torch.manual_seed(0)
    ckpt.save_best(torch.nn.DataParallel(build_model("vgg16", backbone_weights=None)), tmp_path / "model")
    argv = tiny.argv("--load", str(tmp_path / "model" / "best_model.pt"), "--nepisodes", "5")  # 3 + 2 episodes
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                           "test.py", *argv, "--bsz", "2", "--logpath", str(tmp_path / "ddp")],
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert test_script.cli([*argv, "--bsz", "1", "--logpath", str(tmp_path / "single")]) == 0  # per rank: 1

    ddp, ddp_records = read_run(tmp_path / "ddp")
    single, single_records = read_run(tmp_path / "single")
    assert [(r["miou"], r["fb_iou"], r["interval"]) for r in ddp["runs"]] == \
           [(r["miou"], r["fb_iou"], r["interval"]) for r in single["runs"]]
    for cell, records in single_records.items():
        assert len(records) == 5 and ddp_records[cell].first_difference(records) is None
        assert np.array_equal(ddp_records[cell].intersection, records.intersection)
        assert np.array_equal(ddp_records[cell].union, records.union)
    assert json.loads((tmp_path / "ddp" / "results.json").read_text())["complete"] is True

    # the same episodes: compare.py finds exactly no difference, with a zero-width interval
    import compare as compare_script

    assert compare_script.cli([str(tmp_path / "single"), str(tmp_path / "ddp" / "results.json"),
                               "--out", str(tmp_path / "compare")]) == 0
    rows = json.loads((tmp_path / "compare" / "compare.json").read_text())["rows"]
    assert len(rows) == 2 and {r["metric"] for r in rows} == {"miou", "fb_iou"}  # one fold: no mean row
    assert all(r["diff"] == 0.0 and r["interval"] == [0.0, 0.0] and r["share_b_greater"] == 0.0 for r in rows)
    assert "| 1-shot | 0 |" in (tmp_path / "compare" / "compare.md").read_text()
