"""Every row of the README's "What bad input gets" table, run through the real script in a subprocess: exit
status 2, the file or flag named, no traceback, nothing half-written.

Each case builds what it breaks in its own temporary folder (a mini PASCAL tree, a tiny checkpoint, tiny CLIP
weights), so the cases are independent of each other.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch
from PIL import Image

from data.benchmarks import DEFAULT_CAM_DIRS
from model import build_model
from priors.recipes import clip_gradcam as cg
from model.checkpoint import released_state_dict
from priors.recipes.clip_vit import random_clip_vit_state_dict
from tests.data_helpers import TINY_CLIP, TINY_VIT

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NAMES = [f"2007_00000{i}" for i in range(4)]
# An INFO line of the console log (common.console), which goes to stderr before an error: progress, not the error.
INFO_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO ")
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


@dataclass
class Shared:
    """What several cases read and none modifies."""

    checkpoint: Path
    clip_weights: Path
    other_clip_weights: Path
    root: Path  # the module's scratch folder (see finished_run)
    clip_vit_weights: Path  # a tiny random CLIP ViT, for --prior clip-es


@pytest.fixture(scope="module")
def shared(module_tmp) -> Shared:
    root = module_tmp("shared")
    torch.manual_seed(0)
    checkpoint = root / "vgg16_random.pt"
    torch.save(released_state_dict(build_model("vgg16", backbone_weights=None)), checkpoint)
    weights = []
    for seed in (0, 1):
        weights.append(root / f"clip_tiny_{seed}.pt")
        torch.save(cg.random_clip_state_dict(seed, **TINY_CLIP), weights[-1])
    vit = root / "clip_vit_tiny.pt"
    torch.save(random_clip_vit_state_dict(0, **TINY_VIT), vit)
    return Shared(checkpoint, *weights, root=root, clip_vit_weights=vit)


def finished_run(shared: Shared) -> tuple[Path, Path]:
    """(data root, run folder) of a real one-epoch train.py run (ResNet50: smaller checkpoints than VGG16's),
    made the first time a case asks for it; cases resume copies of it."""
    data, run = shared.root / "finished" / "data", shared.root / "finished" / "run"
    if not (run / "last.pt").is_file():
        shutil.rmtree(shared.root / "finished", ignore_errors=True)
        make_mini_pascal(data)
        proc = run_script(*_resnet_train_argv(data, run))
        assert proc.returncode == 0, proc.stderr[-3000:]
    return data, run


def copy_run(run: Path, dest: Path, *, leave_out: tuple[str, ...] = ()) -> Path:
    """A copy of a run folder: checkpoints hard-linked (a test that changed one would fail the comparison of the
    files before and after anyway), the rest copied."""
    for path in sorted(run.rglob("*")):
        if path.name in leave_out or path.is_dir():
            continue
        target = dest / path.relative_to(run)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target) if path.suffix == ".pt" else shutil.copy2(path, target)
    return dest


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` and the SHA-256 of its bytes."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def make_mini_pascal(root: Path) -> Path:
    """Four 40x30 images listed under one class of each fold in trn and in val (the same images: enough for
    these tests), masks, 8x8 CAMs in the default CAM folders, PASCAL split lists under ``root/splits``."""
    images, masks = root / "VOC2012" / "JPEGImages", root / "VOC2012" / "SegmentationClassAug"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in NAMES:
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(images / f"{name}.jpg")
        mask = np.zeros((30, 40), np.uint8)
        mask[5:20, 5:25] = 1
        Image.fromarray(mask).save(masks / f"{name}.png")
    for split, cam_dir in zip(("trn", "val"), DEFAULT_CAM_DIRS["pascal"]):
        (root / cam_dir).mkdir()
        for fold in range(4):
            folder = root / "splits" / "pascal" / split
            folder.mkdir(parents=True, exist_ok=True)
            cls = fold * 5 if split == "val" else fold * 5 + 1  # HSNet: fold f lists classes of fold f
            (folder / f"fold{fold}.txt").write_text("".join(f"{n}__{cls + 1:02d}\n" for n in NAMES))
            for name in NAMES:
                torch.save(torch.rand(8, 8), root / cam_dir / f"{name}--{cls}.pt")
    return root


def run_script(*argv: str, env: Optional[dict[str, str]] = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python <argv>`` from the repository root, output captured as text."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=full_env)


def _common(root: Path) -> list[str]:
    return ["--datapath", str(root), "--splitpath", str(root / "splits"), "--img-size", "64", "--backbone", "vgg16",
            "--device", "cpu", "--nworker", "0"]


def _test_argv(root: Path, checkpoint: Path, *extra: str) -> list[str]:
    return ["test.py", *_common(root), "--load", str(checkpoint), "--nepisodes", "2", "--bsz", "1",
            "--logpath", str(root / "test_run"), *extra]


def _train_argv(root: Path, *extra: str) -> list[str]:
    return ["train.py", *_common(root), "--backbone-weights", "none", "--nepisodes", "2", "--bsz", "2",
            "--niter", "1", "--seed", "0", "--logpath", str(root / "train_run"), *extra]


def _resnet_train_argv(root: Path, run: Path, *extra: str) -> list[str]:
    argv = _train_argv(root, "--logpath", str(run), *extra)
    argv[argv.index("--backbone") + 1] = "resnet50"
    return argv


def _cam_argv(root: Path, weights: Path, *extra: str) -> list[str]:
    return ["generate_cam_voc.py", "--datapath", str(root), "--splitpath", str(root / "splits"),
            "--clip-weights", str(weights), "--device", "cpu", "--nworker", "0", "--no-progress", *extra]


# ---------------------------------------------------------------------------------------------------------
# The cases: each returns (argv, what the message must name, environment); the README table lists them.
# ---------------------------------------------------------------------------------------------------------
Case = Callable[[Path, Shared], tuple[list[str], str, Optional[dict[str, str]]]]


def train_missing_datapath(root, shared):
    return _train_argv(root, "--datapath", str(root / "nowhere")), "--datapath", None


def train_used_run_folder(root, shared):
    (root / "train_run").mkdir()
    (root / "train_run" / "log.txt").write_text("an earlier run\n")
    return _train_argv(root), "--resume", None


def train_resume_with_other_flags(root, shared):
    data, run = finished_run(shared)
    copy = copy_run(run, root / "old_run")
    return _resnet_train_argv(data, copy, "--resume", "--niter", "2", "--lr", "0.001"), "--lr 0.0004 -> 0.001", None


def train_resume_without_run(root, shared):
    return _train_argv(root, "--resume"), "--resume: no run in", None


def train_missing_cams(root, shared):
    for path in (root / "CAM_Val").glob("*.pt"):
        path.unlink()
    return _train_argv(root), "generate_cam_voc.py", None


def train_cuda_without_gpu(root, shared):
    return _train_argv(root, "--device", "cuda"), "--device", None


def train_backbone_weights_not_a_state_dict(root, shared):
    bad = root / "vgg16.pth"
    bad.write_text("not weights")
    return _train_argv(root, "--backbone-weights", str(bad)), str(bad), None


def train_imagenet_weights_offline(root, shared):
    argv = _train_argv(root)
    argv[argv.index("--backbone-weights") + 1] = "imagenet"
    return argv, "--backbone-weights", dict(OFFLINE, TORCH_HOME=str(root / "torch_home"))


def train_logpath_is_a_file(root, shared):
    (root / "notes.txt").write_text("a file, not a run folder\n")
    return _train_argv(root, "--logpath", str(root / "notes.txt")), "notes.txt is a file, not a folder", None


def train_logpath_under_a_file(root, shared):
    (root / "notes.txt").write_text("a file, not a run folder\n")
    return _train_argv(root, "--logpath", str(root / "notes.txt" / "run")), "notes.txt is a file", None


def train_logpath_cannot_be_made(root, shared):
    return _train_argv(root, "--logpath", "/proc/imrhsnet_run"), "--logpath /proc/imrhsnet_run: cannot create", None


def resume_after_last_pt_was_deleted(root, shared):
    """The 600 MB last.pt deleted to save space: nothing of the run may go (it restarted at epoch 0, deleted
    the TensorBoard events, moved the log aside and rewrote best_model.pt)."""
    data, run = finished_run(shared)
    copy = copy_run(run, root / "old_run", leave_out=("last.pt",))
    return _resnet_train_argv(data, copy, "--resume", "--niter", "2"), "1 finished epoch", None


def resume_with_a_truncated_last_pt(root, shared):
    data, run = finished_run(shared)
    copy = copy_run(run, root / "old_run", leave_out=("last.pt",))
    (copy / "last.pt").write_bytes((run / "last.pt").read_bytes()[:100_000])
    return _resnet_train_argv(data, copy, "--resume", "--niter", "2"), f"cannot read {copy / 'last.pt'}", None


def eval_logpath_is_a_file(root, shared):
    (root / "notes.txt").write_text("a file, not a run folder\n")
    argv = _test_argv(root, shared.checkpoint)
    argv[argv.index("--logpath") + 1] = str(root / "notes.txt")
    return argv, "--logpath", None


def eval_cams_of_another_benchmark(root, shared):
    """CAM files with the right names, made for COCO's 80 class names (its manifest says so)."""
    from priors.recipes import PRIOR_RECIPE_IDS
    from common.io import names_sha256
    from data.benchmarks import COCO_CLASSES
    from data.cam_manifest import CamManifest, CamSettings, ImageRecord, image_identity

    settings = CamSettings(PRIOR_RECIPE_IDS["gradcam-rn50"], {
        "clip_weights_sha256": "0" * 64, "precision": "fp32", "clip_image_size": 224, "cam_size": 8,
        "prompt_template": "a photo of a {}", "class_names_sha256": names_sha256(COCO_CLASSES)})
    images = root / "VOC2012" / "JPEGImages"
    CamManifest(root / "CAM_Val", settings, images={
        name: ImageRecord(image_identity(images / f"{name}.jpg"), {0, 5, 10, 15}) for name in NAMES}).save()
    return _test_argv(root, shared.checkpoint), "made for other class names", None


def eval_image_changed_after_its_cams(root, shared):
    """The CAMs were made by the real script; then an image was replaced by another one of the same name."""
    out = ["--traincampath", str(root / "cams_trn"), "--valcampath", str(root / "cams_val")]
    assert run_script(*_cam_argv(root, shared.clip_weights, *out)).returncode == 0
    image = root / "VOC2012" / "JPEGImages" / f"{NAMES[0]}.jpg"
    image.write_bytes((root / "VOC2012" / "JPEGImages" / f"{NAMES[1]}.jpg").read_bytes())
    argv = _test_argv(root, shared.checkpoint, "--valcampath", str(root / "cams_val"))
    return argv, f"{image} changed after its CAMs", None


def eval_imported_prior_missing(root, shared):
    """Priors imported by ``python -m data.priors import`` (the masks as label maps), one of them then deleted:
    the line names it, the next one gives the import that makes it again."""
    from data import priors as data_priors

    out = root / "PRIOR_Val"
    assert data_priors.main(["import", "--benchmark", "pascal", "--split", "val", "--source",
                             str(root / "VOC2012" / "SegmentationClassAug"), "--pattern", "{image}.png", "--values",
                             "label", "--cam-size", "8", "--out", str(out), "--datapath", str(root), "--splitpath",
                             str(root / "splits"), "--no-progress"]) == 0
    missing = out / f"{NAMES[0]}--0.pt"
    missing.unlink()
    needle = f"(first: {missing});\nimport them (from the repository root) with: python -m data.priors import"
    return _test_argv(root, shared.checkpoint, "--valcampath", str(out)), needle, None


def eval_tampered_split_pickle(root, shared):
    folder = root / "splits" / "coco" / "val"
    folder.mkdir(parents=True)
    with open(folder / "fold0.pkl", "wb") as f:
        pickle.dump({0: ["val2014/a.jpg", "val2014/b.jpg"], 1: _Payload()}, f)
    (root / "CAM_COCO").mkdir()
    return _test_argv(root, shared.checkpoint, "--benchmark", "coco"), str(folder / "fold0.pkl"), None


def eval_malformed_split_line(root, shared):
    path = root / "splits" / "pascal" / "val" / "fold0.txt"
    path.write_text("2007_000001_01\n")
    return _test_argv(root, shared.checkpoint), f"{path}:1", None


def eval_corrupt_jpeg_in_a_worker(root, shared):
    path = root / "VOC2012" / "JPEGImages" / f"{NAMES[0]}.jpg"
    path.write_bytes(b"\xff\xd8\xff not really a jpeg")
    argv = _test_argv(root, shared.checkpoint)
    argv[argv.index("--nworker") + 1] = "2"
    return argv, str(path), None


def eval_truncated_cam(root, shared):
    path = root / "CAM_Val" / f"{NAMES[0]}--0.pt"
    path.write_bytes(path.read_bytes()[:40])
    return _test_argv(root, shared.checkpoint), str(path), None


def eval_mask_of_another_size(root, shared):
    path = root / "VOC2012" / "SegmentationClassAug" / f"{NAMES[0]}.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(path)
    return _test_argv(root, shared.checkpoint), str(path), None


def eval_mask_value_outside_the_classes_with_strict_masks(root, shared):
    path = root / "VOC2012" / "SegmentationClassAug" / f"{NAMES[0]}.png"
    mask = np.array(Image.open(path))
    mask[0, 0] = 200  # read as background without --strict-masks, as released
    Image.fromarray(mask).save(path)
    return _test_argv(root, shared.checkpoint, "--strict-masks"), f"{path} holds class index(es) [200]", None


def eval_checkpoint_of_another_backbone(root, shared):
    path = root / "resnet50_model.pt"
    torch.save({"module.backbone.layer3.5.conv1.weight": torch.zeros(1)}, path)
    return _test_argv(root, path), "--backbone resnet50", None


def eval_corrupt_checkpoint(root, shared):
    path = root / "best_model.pt"
    path.write_bytes(b"PK\x03\x04 half a checkpoint")
    return _test_argv(root, path), str(path), None


def eval_missing_checkpoint(root, shared):
    return _test_argv(root, root / "none.pt"), "--load", None


def eval_resume_with_other_flags(root, shared):
    argv = [*_test_argv(root, shared.checkpoint), "--logpath", str(root / "earlier_test")]
    assert run_script(*argv).returncode == 0
    return [*argv, "--resume", "--bsz", "2"], "--bsz 1 -> 2", None


def _episodes_run(folder: Path, shots: tuple[int, ...]) -> Path:
    """A test run's results.json and episodes.npz, written by the code test.py writes them with (2 episodes a
    shot, made-up counts)."""
    from engine.episode_records import Cell, EpisodeRecords, write_episodes

    folder.mkdir()
    records = [EpisodeRecords(Cell(0, 0, k), (0,), np.zeros(2, np.int64), np.array(NAMES[:2]),
                              np.array([[NAMES[1]] * k, [NAMES[0]] * k]), np.ones((2, 2), np.int64),
                              np.full((2, 2), 2, np.int64)) for k in shots]
    write_episodes(folder / "episodes.npz", records)
    runs = [{"seed": 0, "fold": 0, "nshot": k, "miou": 50.0, "fb_iou": 50.0, "class_ids": [0]} for k in shots]
    (folder / "results.json").write_text(json.dumps({
        "benchmark": "pascal", "folds": [0], "nshots": list(shots), "seeds": [0], "complete": True,
        "episodes_file": "episodes.npz", "runs": runs}))
    return folder


def compare_other_protocol(root, shared):
    a, b = _episodes_run(root / "a", (1, 5)), _episodes_run(root / "b", (1,))
    return ["compare.py", str(a), str(b), "--out", str(root / "comparison")], "nshots [1, 5] (A) vs [1] (B)", None


def cam_missing_clip_weights(root, shared):
    return _cam_argv(root, root / "RN50.pt"), "--clip-weights", None


def cam_other_clip_weights(root, shared):
    out = ["--traincampath", str(root / "cams_trn"), "--valcampath", str(root / "cams_val")]
    assert run_script(*_cam_argv(root, shared.clip_weights, *out)).returncode == 0
    return _cam_argv(root, shared.other_clip_weights, *out), "--overwrite", None


def cam_clip_es_into_a_released_cam_folder(root, shared):
    """``--prior clip-es`` into folders of the released recipe's CAMs: refused, naming the recipes."""
    from priors import cam_job

    out = ["--traincampath", str(root / "cams_trn"), "--valcampath", str(root / "cams_val")]
    assert cam_job.main("pascal", _cam_argv(root, shared.clip_weights, *out)[1:]) == 0
    argv = _cam_argv(root, shared.clip_vit_weights, *out, "--prior", "clip-es")
    return argv, (f"{root / 'cams_trn'} holds CAMs made with other settings (recipe: 'clip-rn50-gradcam-released/1' "
                  "-> 'clip-es/1'"), None


def evaluate_priors_malformed_prior(root, shared):
    path = root / "CAM_Val" / f"{NAMES[0]}--0.pt"
    torch.save(torch.zeros(3, 8, 8), path)
    argv = ["evaluate_priors.py", "--priors", str(root / "CAM_Val"), "--out", str(root / "quality"), "--datapath",
            str(root), "--splitpath", str(root / "splits"), "--cam-size", "8", "--no-progress"]
    return argv, f"CAM {path} must hold a 2-D tensor", None


def cam_files_without_manifest(root, shared):
    return _cam_argv(root, shared.clip_weights), "--verify-existing", None  # the mini tree's CAMs: no manifest


def cam_folder_is_a_file(root, shared):
    (root / "cams").write_text("a file, not a folder\n")
    return _cam_argv(root, shared.clip_weights, "--traincampath", str(root / "cams")), "--traincampath", None


def cam_missing_splitpath(root, shared):
    argv = _cam_argv(root, shared.clip_weights)
    argv[argv.index("--splitpath") + 1] = str(root / "no_splits")
    return argv, "--splitpath", None


def predict_unreadable_query(root, shared):
    bad = root / "query.jpg"
    bad.write_text("text, not an image")
    argv = ["predict.py", "--load", str(shared.checkpoint), "--backbone", "vgg16", "--clip-weights",
            str(shared.clip_weights), "--class-name", "cat", "--support",
            str(root / "VOC2012" / "JPEGImages" / f"{NAMES[1]}.jpg"), "--query", str(bad), "--out",
            str(root / "pred"), "--img-size", "64", "--device", "cpu"]
    return argv, str(bad), None


def predict_out_is_a_file(root, shared):
    argv, _, _ = predict_unreadable_query(root, shared)
    (root / "pred").write_text("a file, not a folder\n")
    argv[argv.index("--query") + 1] = str(root / "VOC2012" / "JPEGImages" / f"{NAMES[2]}.jpg")
    return argv, "--out", None


def predict_empty_class_name(root, shared):
    argv, _, _ = predict_unreadable_query(root, shared)
    argv[argv.index("--class-name") + 1] = " "
    argv[argv.index("--query") + 1] = str(root / "VOC2012" / "JPEGImages" / f"{NAMES[2]}.jpg")
    return argv, "--class-name", None


def prepare_offline(root, shared):
    return ["-m", "data.prepare", "pascal", "--datapath", str(root / "data"), "--timeout", "5"], "download of", OFFLINE


def synthetic_into_foreign_folder(root, shared):
    return ["-m", "data.synthetic", str(root)], "not made by data.synthetic", None


def synthetic_root_is_a_file(root, shared):
    (root / "notes.txt").write_text("a file, not a folder\n")
    return ["-m", "data.synthetic", str(root / "notes.txt")], "ROOT", None


def synthetic_too_few_images(root, shared):
    return ["-m", "data.synthetic", str(root / "new"), "--images-per-class", "1"], "--images-per-class", None


def demo_missing_clip_weights(root, shared):
    argv = ["demo.py", "--out", str(root / "demo"), "--clip-weights", str(root / "RN50.pt"),
            "--images-per-class", "2", "--nworker", "0"]
    return argv, "RN50.pt", None


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


CASES: dict[str, Case] = {case.__name__: case for case in (
    train_missing_datapath, train_used_run_folder, train_resume_with_other_flags, train_resume_without_run,
    train_missing_cams, train_cuda_without_gpu, train_backbone_weights_not_a_state_dict,
    train_imagenet_weights_offline, train_logpath_is_a_file, train_logpath_under_a_file,
    train_logpath_cannot_be_made, resume_after_last_pt_was_deleted, resume_with_a_truncated_last_pt,
    eval_tampered_split_pickle, eval_malformed_split_line, eval_corrupt_jpeg_in_a_worker, eval_truncated_cam,
    eval_mask_of_another_size, eval_mask_value_outside_the_classes_with_strict_masks,
    eval_checkpoint_of_another_backbone, eval_corrupt_checkpoint,
    eval_missing_checkpoint, eval_logpath_is_a_file, eval_cams_of_another_benchmark,
    eval_image_changed_after_its_cams, eval_imported_prior_missing, eval_resume_with_other_flags,
    compare_other_protocol,
    cam_missing_clip_weights, cam_other_clip_weights, cam_files_without_manifest, cam_missing_splitpath,
    cam_folder_is_a_file, cam_clip_es_into_a_released_cam_folder, evaluate_priors_malformed_prior,
    predict_unreadable_query, predict_empty_class_name, predict_out_is_a_file,
    prepare_offline, synthetic_into_foreign_folder, synthetic_too_few_images, synthetic_root_is_a_file,
    demo_missing_clip_weights,
)}
# Cases after which every file under the case's folder (the data, and the run a case resumes) is byte for byte
# what it was: the script stopped before writing, and removed what it had created.
UNCHANGED = {"train_resume_with_other_flags", "train_logpath_is_a_file", "train_logpath_under_a_file",
             "train_logpath_cannot_be_made", "resume_after_last_pt_was_deleted", "resume_with_a_truncated_last_pt",
             "eval_logpath_is_a_file", "eval_cams_of_another_benchmark", "eval_image_changed_after_its_cams",
             "cam_folder_is_a_file", "predict_out_is_a_file", "synthetic_root_is_a_file", "eval_imported_prior_missing",
             "cam_clip_es_into_a_released_cam_folder", "evaluate_priors_malformed_prior",
             "eval_resume_with_other_flags", "compare_other_protocol"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gets_one_clear_line(name, tmp_path, shared):
    if name == "train_cuda_without_gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    if name == "train_logpath_cannot_be_made" and not Path("/proc").is_dir():
        pytest.skip("no /proc to fail a mkdir in")
    root = make_mini_pascal(tmp_path / "data")
    argv, needle, env = CASES[name](root, shared)
    before = snapshot(root) if name in UNCHANGED else None
    proc = run_script(*argv, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    error_lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert error_lines and needle in proc.stderr, proc.stderr[-3000:]
    message = [line for line in proc.stderr.strip().splitlines() if not INFO_LINE.match(line)]
    assert len(message) <= 3, proc.stderr  # argparse: usage + error; ours: 1-2 lines
    assert not (root / "test_run" / "results.json").exists()
    if name.startswith("train_") and name not in ("train_used_run_folder", "train_resume_with_other_flags"):
        assert not (root / "train_run").exists(), "a run stopped by bad input leaves no folder behind"
    if name == "compare_other_protocol":
        assert not (root / "comparison").exists()
    if before is not None:
        assert snapshot(root) == before, "bad input changed, added or removed files"


def test_a_full_disk_while_saving_a_checkpoint_gets_one_clear_line(tmp_path):
    """The machine, not the flags: the first checkpoint does not fit. A file-size limit (``ulimit -f``) in
    the child stands in for a full disk (the kernel refuses the write with EFBIG instead of ENOSPC; both
    take the same path). The message names the checkpoint and the free space, and the run folder, which
    holds no finished epoch yet, is removed."""
    root = make_mini_pascal(tmp_path / "data")
    limit = 32 << 20  # far below a VGG16 checkpoint (0.6 GB), far above logs and CAMs

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    proc = subprocess.run([sys.executable, *_train_argv(root)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONUNBUFFERED="1"), preexec_fn=limit_file_size)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert str(root / "train_run") in proc.stderr and ".pt (" in proc.stderr, proc.stderr
    assert "File too large" in proc.stderr and "MB free in" in proc.stderr, proc.stderr
    assert not (root / "train_run").exists(), "a run stopped before its first checkpoint leaves no folder behind"


def test_what_is_only_suspicious_is_a_warning_in_the_log_and_results_json(tmp_path, shared):
    """Not errors, but never silent: a checkpoint tested with other settings than the args.json train.py wrote
    beside it, one checkpoint file for two folds, CAM folders without a manifest (the authors' download)."""
    data, run = finished_run(shared)  # a resnet50 run of fold 0, --masking released --stage 2, 64 px
    for fold in (0, 1):  # what a sweep gets when each fold's folder holds the same file
        (tmp_path / f"run_f{fold}").symlink_to(run)
    argv = _test_argv(data, tmp_path / "run_f{fold}" / "best_model.pt", "--fold", "0", "1", "--masking", "paper",
                      "--stage", "3", "--backbone", "resnet50")
    argv[argv.index("--logpath") + 1] = str(tmp_path / "test_run")
    proc = run_script(*argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = json.loads((tmp_path / "test_run" / "results.json").read_text())["warnings"]
    checkpoint = (run / "best_model.pt").resolve()  # as test.py names it
    assert warnings[:3] == [
        f"fold 0: {checkpoint} was trained with other settings than it is tested with (trained -> tested, from "
        f"{checkpoint.parent / 'args.json'}): --masking 'released' -> 'paper'; --stage 2 -> 3",
        f"fold 1: {checkpoint} was trained with other settings than it is tested with (trained -> tested, from "
        f"{checkpoint.parent / 'args.json'}): --masking 'released' -> 'paper'; --stage 2 -> 3; --fold 0 -> 1",
        f"folds 0, 1 are tested with the same checkpoint file {checkpoint}: each fold's model is trained on other "
        "classes"], warnings
    assert len(warnings) == 4 and f"{data / 'CAM_Val'} has no cam_manifest.json" in warnings[3], warnings
    log = (tmp_path / "test_run" / "log.txt").read_text()
    assert all(message in log for message in warnings)
    assert json.loads((tmp_path / "test_run" / "results.json").read_text())["cam_manifests"] == {"valcampath": None}
