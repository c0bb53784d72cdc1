"""FSS-1000 end to end on the synthetic layout, at a tiny size: generate_cam_fss.py's job (tiny random CLIP),
train.py trains and resumes, test.py prints the final line; --fold is refused."""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import test as test_script
import train
from data.cam_files import cam_path
from data.fss import fss_vocabulary, prompt_name
from data.synthetic import make_benchmark
from priors import cam_job
from engine.args import parse_args
from data.cam_manifest import MANIFEST_NAME
from priors.recipes import clip_gradcam as cg
from tests.data_helpers import TINY_CLIP

pytestmark = pytest.mark.slow
FINAL_LINE = re.compile(r"^Fold 0 mIoU: +(\d+\.\d\d) \t FB-IoU: +(\d+\.\d\d)$", re.MULTILINE)
IMG = 64


@pytest.fixture(scope="module")
def fss(module_tmp):
    """Synthetic FSS-1000 (one class per split, 10 images each) and its CAMs from the real CAM job."""
    root = make_benchmark(module_tmp("fss_e2e"), seed=0, benchmarks=["fss"], fss_classes=(1, 1, 1),
                          max_size=64)
    weights = root / "tiny_clip.pt"
    torch.save(cg.random_clip_state_dict(1, **TINY_CLIP), weights)
    argv = ["--datapath", str(root), "--splitpath", str(root / "splits"), "--clip-weights", str(weights),
            "--device", "cpu", "--nworker", "0", "--bsz", "16", "--no-progress"]
    assert cam_job.main("fss", argv) == 0
    return root, weights, argv


def _cam_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*.pt")}


def test_cam_job_one_cam_per_image_for_its_class(fss, caplog):
    root, weights, argv = fss
    vocabulary = fss_vocabulary(root / "splits")
    assert [cls for _, cls in vocabulary] == [0, 520, 760]
    cams = root / "CAM_FSS"
    expected = {cam_path(cams, f"{name}/{k}", cls).relative_to(cams).as_posix() for name, cls in vocabulary
                for k in range(1, 11)}
    assert _cam_files(root / "CAM_FSS") == expected  # CAM_FSS/<class>/<n>--<class id>.pt, nothing else
    # the prompts: every class name, class-id order, underscores as spaces (recorded in the folder's manifest)
    prompts = [prompt_name(name) for name, _ in vocabulary]
    assert all(" " in p and "_" not in p for p in prompts)
    manifest = json.loads((root / "CAM_FSS" / MANIFEST_NAME).read_text())
    assert json.dumps(manifest).count(hashlib.sha256("\n".join(prompts).encode()).hexdigest()) == 1
    # a CAM is the recipe's for the image and its class's position among those prompts
    name, cls = vocabulary[1]
    saved = torch.load(cam_path(root / "CAM_FSS", f"{name}/7", cls), weights_only=True)
    with Image.open(root / "FSS-1000" / name / "7.jpg") as img:
        direct = cg.compute_cams(cg.load_clip(weights), [img], [1], prompts)[0]
    assert saved.shape == (50, 50)
    torch.testing.assert_close(saved, direct, atol=2e-4, rtol=0)
    # a rerun resumes: nothing left to compute
    with caplog.at_level(logging.INFO, logger="priors.cam_job"):
        assert cam_job.main("fss", argv) == 0
    assert "30 pairs: 0 computed, 30 skipped" in caplog.text


def test_cam_job_reports_unreadable_images_and_missing_folders(fss, tmp_path, capsys):
    root, weights, _ = fss
    data = tmp_path / "data"
    shutil.copytree(root / "FSS-1000", data / "FSS-1000")
    name = fss_vocabulary(root / "splits")[0][0]
    (data / "FSS-1000" / name / "4.jpg").write_bytes(b"not a jpeg")
    argv = ["--datapath", str(data), "--splitpath", str(root / "splits"), "--clip-weights", str(weights),
            "--device", "cpu", "--nworker", "0", "--no-progress"]
    assert cam_job.main("fss", argv) == 1
    assert f"{name}/4.jpg" in capsys.readouterr().err
    assert len(_cam_files(data / "CAM_FSS")) == 29
    shutil.rmtree(data / "FSS-1000" / name)
    assert cam_job.main("fss", argv) == 2
    assert f"FSS-1000 class folder {data / 'FSS-1000' / name} not found" in capsys.readouterr().err


def _flags(root: Path, *extra: str) -> list[str]:
    return ["--benchmark", "fss", "--datapath", str(root), "--splitpath", str(root / "splits"),
            "--img-size", str(IMG), "--backbone", "vgg16", "--backbone-weights", "none", "--nworker", "0",
            "--device", "cpu", *extra]


def test_train_resume_and_test(fss, tmp_path, capsys):
    root, _, _ = fss
    run_dir = tmp_path / "run"
    flags = _flags(root, "--logpath", str(run_dir), "--bsz", "5", "--seed", "3", "--lr", "1e-3")
    first = train.main(parse_args("train", flags + ["--niter", "1"]))
    assert first["status"] == "finished" and first["epochs"] == 1
    args = json.loads((run_dir / "args.json").read_text())
    assert (args["benchmark"], args["fold"], args["nepisodes"]) == ("fss", 0, None)
    assert Path(args["traincampath"]) == Path(args["valcampath"]) == root / "CAM_FSS"
    log = (run_dir / "log.txt").read_text()
    # training: every trn image once (10 episodes); validation: every val image once (10): 2 batches of 5 each
    assert log.count("[Epoch: 00] [Batch: 0001/0002]") == 2

    resumed = train.main(parse_args("train", flags + ["--niter", "2", "--resume"]))
    assert resumed["status"] == "finished" and resumed["epochs"] == 2
    last = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1
    log = (run_dir / "log.txt").read_text()
    assert log.count("*** Validation [@Epoch 00]") == 1 and log.count("*** Validation [@Epoch 01]") == 1

    capsys.readouterr()
    assert test_script.cli(_flags(root, "--load", str(run_dir / "best_model.pt"), "--logpath",
                                  str(tmp_path / "t1"), "--bsz", "4")) == 0
    match = FINAL_LINE.search(capsys.readouterr().out)
    assert match
    results = json.loads((tmp_path / "t1" / "results.json").read_text())
    assert results["episodes"] == 10 and sorted(results["per_class_iou"]) == ["760"]
    assert f"{results['miou']:5.2f}".strip() == match.group(1)

    assert test_script.cli(_flags(root, "--load", str(run_dir / "best_model.pt"), "--logpath",
                                  str(tmp_path / "t5"), "--nshot", "5", "--nepisodes", "3", "--bsz", "3")) == 0
    assert FINAL_LINE.search(capsys.readouterr().out)
    assert json.loads((tmp_path / "t5" / "results.json").read_text())["episodes"] == 3


@pytest.mark.parametrize("script", ["train", "test"])
def test_fold_is_refused_for_fss(fss, tmp_path, script, capsys):
    root, _, _ = fss
    load = tmp_path / "best_model.pt"
    load.write_bytes(b"x")
    with pytest.raises(SystemExit) as exc:
        parse_args(script, _flags(root, "--fold", "1", "--load", str(load)) if script == "test" else
                   _flags(root, "--fold", "1"))
    assert exc.value.code == 2
    assert "argument --fold: fss (FSS-1000) has no folds" in capsys.readouterr().err
