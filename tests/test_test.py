"""test.py on a released-format checkpoint (random VGG16 weights) and the tiny synthetic split, on the CPU."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import test as test_script
from engine import run_checkpoint as ckpt
from tests.train_helpers import make_tiny_inputs

pytestmark = pytest.mark.slow
FINAL_LINE = re.compile(r"^Fold 0 mIoU: +(\d+\.\d\d) \t FB-IoU: +(\d+\.\d\d)$", re.MULTILINE)


@pytest.fixture(scope="module")
def setup(synthetic_root, module_tmp):
    from model import build_model

    root = module_tmp("testpy")
    tiny = make_tiny_inputs(synthetic_root, root)
    torch.manual_seed(0)
    model = build_model("vgg16", backbone_weights=None)
    ckpt.save_best(torch.nn.DataParallel(model), root / "run.log")  # keys as the released DataParallel save
    return tiny, root / "run.log" / "best_model.pt", root


def _run(tiny, load, run_dir, *extra):
    return test_script.cli(tiny.argv("--load", str(load), "--logpath", str(run_dir), "--bsz", "2",
                                     "--nepisodes", "4", *extra))


def test_prints_final_line_and_writes_json(setup, capsys):
    tiny, load, root = setup
    assert _run(tiny, load, root / "t1", "--visualize") == 0
    out = capsys.readouterr().out
    match = FINAL_LINE.search(out)
    assert match, out[-2000:]
    results = json.loads((root / "t1" / "results.json").read_text())
    assert f"{results['miou']:5.2f}".strip() == match.group(1) and f"{results['fb_iou']:5.2f}".strip() == match.group(2)
    assert results["episodes"] == 4 and results["nshot"] == 1 and len(results["per_class_iou"]) == 5
    assert len(list((root / "t1" / "vis").glob("*_class-*_iou-*.jpg"))) == 4
    assert (root / "t1" / "log.txt").read_text().count("Fold 0 mIoU") == 1
    # one fold and one shot: a one-cell table, and the run's keys at the top level as before sweeps existed
    assert [(r["fold"], r["nshot"], r["miou"]) for r in results["runs"]] == [(0, 1, results["miou"])]
    assert results["load"] == results["checkpoint"] == str(load) and len(results["checkpoint_sha256"]) == 64
    assert all((root / "t1" / name).is_file() for name in ("table.md", "table.csv", "table.png"))


def test_nshot_vote(setup, capsys):
    tiny, load, root = setup
    _run(tiny, load, root / "t2", "--nshot", "2")
    results = json.loads((root / "t2" / "results.json").read_text())
    assert results["nshot"] == 2 and results["episodes"] == 4
    assert FINAL_LINE.search(capsys.readouterr().out)


def test_wrong_checkpoint_is_a_clear_error(setup, capsys):
    tiny, _, root = setup
    bad = root / "bad.pt"
    torch.save({"module.nothing": torch.zeros(1)}, bad)
    assert _run(tiny, bad, root / "t4") == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "unexpected keys: nothing" in err and "Traceback" not in err


def test_a_used_folder_is_refused_and_bad_input_leaves_no_folder(setup, capsys):
    tiny, load, root = setup
    assert _run(tiny, load, root / "t5") == 0
    before = sorted(p.name for p in (root / "t5").iterdir())
    assert _run(tiny, load, root / "t5") == 2  # a second test run never mixes its results with the first's
    assert f"{root / 't5'} already holds a run" in capsys.readouterr().err
    assert sorted(p.name for p in (root / "t5").iterdir()) == before

    bad = root / "bad_keys.pt"  # passes the flag checks, fails when the model loads it: the folder goes again
    torch.save({"module.nothing": torch.zeros(1)}, bad)
    assert _run(tiny, bad, root / "t6") == 2
    assert str(bad) in capsys.readouterr().err and not (root / "t6").exists()


def test_mask_values_outside_the_class_range_are_warned_once_and_counted(setup, capsys, tmp_path):
    """Read as background, as released: one warning naming the file although two DataLoader workers read it
    (the query of episode 0, the only other image of its class for episode 1), and the count at the end."""
    tiny, load, root = setup
    data = tmp_path / "data"
    (data / "VOC2012").mkdir(parents=True)
    (data / "VOC2012" / "JPEGImages").symlink_to(tiny.datapath / "VOC2012" / "JPEGImages")
    masks = data / "VOC2012" / "SegmentationClassAug"
    shutil.copytree(tiny.datapath / "VOC2012" / "SegmentationClassAug", masks)
    names = [line.split("__")[0] for line in (tiny.splitpath / "pascal" / "val" / "fold0.txt").read_text().split()]
    altered = masks / f"{names[0]}.png"
    label = np.array(Image.open(altered))
    label[0, :3] = 200
    Image.fromarray(label).save(altered)
    argv = tiny.argv("--load", str(load), "--logpath", str(root / "t7"), "--bsz", "1", "--nepisodes", "2",
                     "--datapath", str(data), "--nworker", "2")
    assert test_script.cli(argv) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if "outside the class range; read as background" in line]
    assert len(warnings) == 1 and str(altered) in warnings[0] and "[200]" in warnings[0], out[-3000:]
    assert f"1 mask file(s) held values outside the class range and were read as background, as the released " \
           f"code reads them (first: {altered} [200]" in out
