"""test.py over several folds and shots: every table cell equals a separate run's printed number (tiny, CPU)."""
from __future__ import annotations

import csv
import hashlib
import json
import re

import pytest
import torch
from PIL import Image

import test as test_script
from engine import run_checkpoint as ckpt
from engine import sweep
from tests.train_helpers import make_tiny_inputs

pytestmark = pytest.mark.slow
FINAL_LINE = re.compile(r"^Fold (\d) mIoU: +(\S+) \t FB-IoU: +(\S+)$", re.MULTILINE)
FOLDS, SHOTS = (0, 1), (1, 5)


def _mask_following_model(seed: int) -> torch.nn.Module:
    """Random weights, but the last 1x1 head votes foreground where the current mask (CAM, then the previous
    stage's prediction) plus a share of the learner's logits is high, so the numbers differ per fold and shot
    (an all-background model would score mIoU 0 everywhere and FB-IoU the same at every shot)."""
    from model import build_model

    torch.manual_seed(seed)
    model = build_model("vgg16", backbone_weights=None)
    first, _, last = model.res
    with torch.no_grad():
        for conv in (first, last):
            conv.weight.zero_()
            conv.bias.zero_()
        first.weight[0, :, 0, 0] = torch.tensor([-2.0, 2.0, 10.0])  # [bg logit, fg logit, mask]
        first.bias[0] = -5.0
        last.weight[1, 0, 0, 0] = 1.0  # foreground score = GELU(10 * mask - 5 + logit share), background 0
    return model


@pytest.fixture(scope="module")
def setup(synthetic_root, module_tmp):
    """Tiny inputs and one released-format checkpoint per fold (different random weights)."""
    root = module_tmp("sweep")
    tiny = make_tiny_inputs(synthetic_root, root, per_class=3)  # 3 images a class: 5 supports are not all one
    for fold in FOLDS:
        ckpt.save_best(torch.nn.DataParallel(_mask_following_model(fold)), root / f"fold{fold}")
    return tiny, str(root / "fold{fold}" / "best_model.pt"), root


def _argv(tiny, load, run_dir, *extra):
    return tiny.argv("--load", load, "--logpath", str(run_dir), "--bsz", "4", "--nepisodes", "4", *extra)


def test_sweep_table_equals_separate_runs(setup, capsys, monkeypatch):
    tiny, template, root = setup
    loads = []
    real_read = sweep.read_state_dict
    monkeypatch.setattr(sweep, "read_state_dict", lambda path: loads.append(path) or real_read(path))
    argv = _argv(tiny, template, root / "sweep", "--fold", *map(str, FOLDS), "--nshot", *map(str, SHOTS))
    assert test_script.cli(argv) == 0
    out = capsys.readouterr().out
    assert loads == [template.format(fold=f) for f in FOLDS]  # each fold's checkpoint read once
    assert [m.group(1) for m in FINAL_LINE.finditer(out)] == ["0", "0", "1", "1"]
    assert "## mIoU (%)" in out and "## FB-IoU (%)" in out  # the table is printed

    separate, printed = {}, {}
    for fold in FOLDS:
        for shot in SHOTS:
            run_dir = root / f"f{fold}_{shot}shot"
            test_script.cli(_argv(tiny, template.format(fold=fold), run_dir, "--fold", str(fold), "--nshot", str(shot)))
            match = FINAL_LINE.search(capsys.readouterr().out)
            printed[fold, shot] = {"miou": match.group(2), "fb_iou": match.group(3)}
            separate[fold, shot] = json.loads((run_dir / "results.json").read_text())

    assert len({tuple(p.values()) for p in printed.values()}) == len(printed)  # a mix-up would show

    cells = {(row["metric"], int(row["shot"]), row["line"]): row
             for row in csv.DictReader((root / "sweep" / "table.csv").open())}
    for metric in ("miou", "fb_iou"):
        for shot in SHOTS:
            ours = cells[metric, shot, "ours"]
            for fold in FOLDS:
                assert ours[f"fold{fold}"] == printed[fold, shot][metric], (metric, shot, fold)
            assert ours["fold2"] == ours["fold3"] == ""
            fold_cells = [float(ours[f"fold{f}"]) for f in FOLDS]
            assert abs(float(ours["mean"]) - sum(fold_cells) / len(fold_cells)) <= 0.005 + 1e-9
            # synthetic data: the paper's numbers do not apply
            assert all(v == "" for k, v in cells[metric, shot, "paper"].items() if k.startswith("fold") or k == "mean")

    results = json.loads((root / "sweep" / "results.json").read_text())
    assert results["folds"] == list(FOLDS) and results["nshots"] == list(SHOTS) and results["synthetic_data"]
    assert "--fold 0 1 --nshot 1 5" in results["command"] and results["load"] == template
    assert [(r["fold"], r["nshot"]) for r in results["runs"]] == [(f, k) for f in FOLDS for k in SHOTS]
    for run in results["runs"]:
        alone = separate[run["fold"], run["nshot"]]
        assert run["miou"] == alone["miou"] and run["fb_iou"] == alone["fb_iou"]
        assert run["per_class_iou"] == alone["per_class_iou"] and run["episodes"] == alone["episodes"] == 4
        digest = hashlib.sha256(open(run["checkpoint"], "rb").read()).hexdigest()
        assert run["checkpoint_sha256"] == digest == alone["checkpoint_sha256"]
    assert "fold" not in results  # a sweep's runs are in "runs" only
    table = results["table"]["miou"]["5"]["ours"]
    assert table["folds"][:2] == [separate[f, 5]["miou"] for f in FOLDS] and table["folds"][2:] == [None, None]
    assert table["mean"] == pytest.approx(sum(table["folds"][:2]) / 2)
    assert (root / "sweep" / "table.md").read_text().count("| ours |") == 4
    image = Image.open(root / "sweep" / "table.png")
    assert image.format == "PNG" and image.width > image.height >= 200


def test_missing_checkpoint_of_one_fold_stops_before_any_work(setup, capsys, monkeypatch):
    tiny, template, root = setup
    monkeypatch.setattr(sweep, "test_pass", lambda *a, **k: pytest.fail("an episode ran"))
    run_dir = root / "missing"
    with pytest.raises(SystemExit) as exc:
        test_script.cli(_argv(tiny, template, run_dir, "--fold", "0", "1", "2"))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--load" in err and "fold 2" in err and template.format(fold=2) in err
    assert not run_dir.exists()  # no log, no results


def test_a_checkpoint_that_does_not_fit_stops_before_any_work(setup, capsys, monkeypatch, tmp_path):
    tiny, template, root = setup
    monkeypatch.setattr(sweep, "test_pass", lambda *a, **k: pytest.fail("an episode ran"))
    bad_template = str(tmp_path / "f{fold}.pt")
    for fold in (0, 1):
        state = torch.load(template.format(fold=fold), weights_only=True)
        if fold == 1:
            state["module.nothing"] = torch.zeros(1)
        torch.save(state, bad_template.format(fold=fold))
    run_dir = root / "bad_fold1"
    assert test_script.cli(_argv(tiny, bad_template, run_dir, "--fold", "0", "1")) == 2
    err = capsys.readouterr().err
    assert bad_template.format(fold=1) in err and "unexpected keys: nothing" in err
    assert not run_dir.exists()


@pytest.mark.parametrize("flags, needle", [
    (["--fold", "0", "1"], "{fold}"),  # several folds, one plain checkpoint
    (["--fold", "0", "0"], "--fold"),
    (["--nshot", "1", "1"], "--nshot"),
])
def test_sweep_flags_are_checked(setup, capsys, flags, needle):
    tiny, template, root = setup
    with pytest.raises(SystemExit):
        test_script.cli(_argv(tiny, template.format(fold=0), root / "bad", *flags))
    assert needle in capsys.readouterr().err
