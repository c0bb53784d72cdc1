"""``train.py --micro-bsz M``: a batch as several forward/backward passes and one optimizer step is the same step
as the whole batch (GroupNorm learner, frozen eval-mode backbone), up to the order of the sums."""
from __future__ import annotations

import copy
import json

import pytest
import torch

import train
from data.dataset import build_dataloader, build_dataset
from engine.args import parse_args
from engine.loops import train_epoch
from engine.micro_batches import MicroBatchChoice, candidates, micro_batches, resolve_micro_bsz
from engine.training import build_optimizer
from common.evaluation import IoUMeter
from model import build_model
from tests.train_helpers import IMG_SIZE, make_tiny_inputs, read_scalar_events

BSZ = 8
PARAM_TOL = 1e-6   # relative, every updated tensor after one Adam step
GRAD_TOL = 1e-5    # relative (norm of the difference / norm), every accumulated gradient


@pytest.fixture(scope="module")
def batch(synthetic_root, module_tmp):
    """The first BSZ training episodes of the tiny PASCAL split (fold 0)."""
    tiny = make_tiny_inputs(synthetic_root, module_tmp("micro"), per_class=4)
    dataset = build_dataset("pascal", datapath=tiny.datapath, fold=0, split="trn", img_size=IMG_SIZE,
                            cam_train_path=tiny.traincam, cam_val_path=tiny.valcam, splitpath=tiny.splitpath, seed=0)
    dataset.set_epoch(0)
    loader = build_dataloader(dataset, bsz=BSZ, nworker=0, shuffle=False, seed=0)
    return dataset, next(iter(loader))


def _one_step(model, dataset, batch, micro):
    model = copy.deepcopy(model)
    optimizer = build_optimizer(model, 4e-4)
    train_epoch(model, [batch], optimizer, IoUMeter.for_dataset(dataset), epoch=0, stage=2,
                device=torch.device("cpu"), micro_bsz=micro, log_every=0, progress=False)
    return model


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.slow
@pytest.mark.parametrize("backbone, checkpoint_learner", [("resnet50", False), ("resnet50", True),
                                                          ("vgg16", False), ("vgg16", True)])
def test_micro_batches_give_the_whole_batch_step(batch, backbone, checkpoint_learner):
    dataset, episodes = batch
    torch.manual_seed(0)
    model = build_model(backbone, backbone_weights=None, checkpoint_learner=checkpoint_learner)
    model.backbone.requires_grad_(False)
    whole = _one_step(model, dataset, episodes, None)
    for micro in (2, 3):  # 3: passes of 3, 3 and 2 episodes, the last weighted by its size
        split = _one_step(model, dataset, episodes, micro)
        worst_param = max(_relative(p, q) for p, q in zip(split.parameters(), whole.parameters()) if q.requires_grad)
        worst_grad = max(_relative(p.grad, q.grad) for p, q in zip(split.parameters(), whole.parameters())
                         if q.grad is not None)
        print(f"{backbone} ckpt={checkpoint_learner} micro={micro}: params {worst_param:.2e}, grads {worst_grad:.2e}")
        assert worst_param <= PARAM_TOL and worst_grad <= GRAD_TOL, (micro, worst_param, worst_grad)


def test_micro_batches_cover_the_batch_once_with_their_shares(batch):
    _, episodes = batch
    parts = list(micro_batches(episodes, 3))
    assert [int(part["query_img"].shape[0]) for part, _ in parts] == [3, 3, 2]
    assert sum(share for _, share in parts) == pytest.approx(1.0)
    assert torch.equal(torch.cat([part["support_cams"] for part, _ in parts]), episodes["support_cams"])
    assert parts[0][0]["query_name"] == episodes["query_name"]  # not a tensor: left whole
    assert [share for _, share in micro_batches(episodes, None)] == [1.0]


def test_auto_is_the_whole_batch_on_a_cpu_and_the_largest_that_fits_on_cuda(monkeypatch):
    assert resolve_micro_bsz("auto", 40, torch.device("cpu"), lambda size: None).size is None
    assert resolve_micro_bsz(None, 40, torch.device("cpu"), lambda size: None).size is None
    assert resolve_micro_bsz(5, 40, torch.device("cpu"), lambda size: None).size == 5
    assert resolve_micro_bsz(64, 40, torch.device("cpu"), lambda size: None).size is None
    assert candidates(8) == [8, 4, 3, 2, 1] and candidates(40)[:4] == [40, 20, 14, 10]
    for name in ("reset_peak_memory_stats", "empty_cache"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 3 * 2**30)
    tried = []

    def step(size):  # a simulated GPU on which 11 or more episodes per pass run out of memory
        tried.append(size)
        if size > 10:
            raise torch.cuda.OutOfMemoryError("simulated")

    choice = resolve_micro_bsz("auto", 40, torch.device("cuda"), step)
    assert choice == MicroBatchChoice(10, 3.0) and tried == [40, 20, 14, 10]
    assert choice.record("auto", 40) == {"requested": "auto", "batch_per_rank": 40, "episodes_per_pass": 10,
                                         "passes": 4, "step_peak_gib": 3.0}
    with pytest.raises(torch.cuda.OutOfMemoryError):
        resolve_micro_bsz("auto", 4, torch.device("cuda"), lambda size: (_ for _ in ()).throw(
            torch.cuda.OutOfMemoryError("simulated")))


def test_bad_micro_bsz_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args("train", ["--micro-bsz", "0"])
    assert exit_info.value.code == 2
    assert "argument --micro-bsz: a number >= 1 or 'auto', got '0'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_short_run_logs_the_same_with_micro_batches(synthetic_root, tmp_path):
    tiny = make_tiny_inputs(synthetic_root, tmp_path / "tiny", per_class=4)
    runs = {}
    for name, extra in (("whole", ()), ("micro", ("--micro-bsz", "3"))):
        run = tmp_path / name
        args = parse_args("train", tiny.argv("--backbone", "resnet50", "--bsz", "4", "--niter", "2", "--nepisodes",
                                             "4", "--seed", "1", "--logpath", str(run), *extra))
        result = train.main(args)
        runs[name] = (read_scalar_events(run / "tbd"), result["best_miou"])
        chosen = json.loads((run / "args.json").read_text()).get("micro_bsz_chosen")
        assert chosen == ({"requested": 3, "batch_per_rank": 4, "episodes_per_pass": 3, "passes": 2,
                           "step_peak_gib": None} if extra else None)
        for checkpoint in run.glob("*.pt"):
            checkpoint.unlink()
    (whole, best_whole), (micro, best_micro) = runs["whole"], runs["micro"]
    assert best_micro == pytest.approx(best_whole, abs=1e-9)
    for tag in ("runs/data/loss/trn_loss", "runs/data/loss/val_loss", "runs/data/miou/trn_miou"):
        assert [step for step, _ in micro[tag]] == [step for step, _ in whole[tag]] == [0, 1]
        for (_, a), (_, b) in zip(micro[tag], whole[tag]):
            assert a == pytest.approx(b, abs=1e-5), tag
