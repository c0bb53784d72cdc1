"""``make demo``: few-shot segmentation on the embedded synthetic benchmark, on a laptop CPU, in one command.

Every step runs the real command a researcher would run, in a subprocess:

1. ``python -m data.synthetic``  writes a PASCAL-5i-layout benchmark, 0-2 objects of other classes per image;
2. ``generate_cam_voc.py``        CLIP RN50 Grad-CAM priors for every (image, class) pair; then
   ``evaluate_priors.py``         their IoU with the ground truth on fold 0's test pairs, beside a mask
                                  covering the whole image (with a random CLIP: near that chance level);
3. ``python -m apps.pretrain``  trains the backbone to classify fold 0's *training* classes (rendered
                                  images; the test classes are never drawn) and saves a torchvision file;
4. ``test.py``                    the untrained IMR-HSNet head on that frozen backbone, 1-shot and 5-shot;
5. ``train.py``                   fold 0 at a reduced image size;
6. ``test.py``                    the trained model, 1-shot and 5-shot;
7. the control (in this process): the trained model, 1-shot, with each query's supports taken from another
   class (:mod:`apps.support_swap`): the query's own class must be found far less often.

then prints a table, writes ``results.json``, ``qualitative.png`` (queries holding two objects, each segmented
once with a support of either class) and ``test_episodes.png`` (query | ground truth | CAM prior | untrained |
trained), and says where the TensorBoard logs are. Without ``--clip-weights`` the CLIP model is randomly
initialised (this machine cannot download weights) and the output says so: its CAM priors carry no class
information, so what separates the classes is the pretrained backbone and the support.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from common.cli import EXIT_BAD_INPUT, ArgumentParser, run_cli
from common.constants import FEATURE_STRIDE, IGNORE_LABEL
from common.errors import UserInputError
from common.flags import add_flags
from common.device import resolve_device
from common.io import atomic_torch_save, atomic_write_bytes, atomic_write_text, prepare_output_folder, sha256_file
from common.paths import REPO_ROOT
from common.resize import resize_bilinear
from data.benchmarks import DEFAULT_CAM_DIRS
from data.synthetic import MAX_DISTRACTORS
from model import build_model
from model.backbone import BACKBONES, build_backbone
from model.checkpoint import load_model_state, released_state_dict
from priors.clip_weights import RANDOM_WEIGHTS, random_clip_seed
from model.masking import MASKING_MODES

logger = logging.getLogger("demo")


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``demo.py``; the defaults are what ``make demo`` runs."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    given = {"backbones": tuple(BACKBONES), "maskings": tuple(MASKING_MODES), "max_distractors": MAX_DISTRACTORS,
             "distractor_counts": range(MAX_DISTRACTORS + 1)}
    add_flags(parser, "demo", "--out", "--seed", "--backbone", "--backbone-weights", **given)
    parser.add_argument("--pretrain-epochs", type=int, default=4,
                        help="epochs of the backbone pretraining on fold 0's training classes; 0 keeps the "
                             "backbone at random init (then the head can only learn objectness)")
    parser.add_argument("--pretrain-images-per-class", type=int, default=40,
                        help="rendered pretraining images per training class")
    add_flags(parser, "demo", "--clip-weights", "--images-per-class", "--max-distractors", "--masking", "--img-size",
              "--niter", "--bsz", "--lr", "--stage", "--nepisodes", **given)
    parser.add_argument("--val-episodes", type=int, default=50, help="validation episodes after each epoch")
    add_flags(parser, "demo", "--nworker", "--device")
    return parser


class DemoStepError(UserInputError, RuntimeError):
    """A step of the demo stopped on bad input (its message names the flag or file)."""


def run_step(title: str, command: Sequence[str], log_path: Path) -> float:
    """Run one pipeline command, its output going to ``log_path``; raise with the log's tail if it fails."""
    print(f"\n== {title}\n   $ {shlex.join(str(part) for part in command)}", flush=True)
    start = time.perf_counter()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.run([str(part) for part in command], cwd=REPO_ROOT, stdout=log,
                                 stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    lines = log_path.read_text(errors="replace").splitlines() if process.returncode else []
    if process.returncode == EXIT_BAD_INPUT:  # the step's own one-line message says what to fix
        message = next((line for line in reversed(lines) if "error" in line), lines[-1] if lines else "")
        raise DemoStepError(f"{title} stopped on bad input: {message.strip()} (log: {log_path})")
    if process.returncode != 0:
        tail = "\n".join(lines[-25:])
        raise RuntimeError(f"{title} failed (exit {process.returncode}); log: {log_path}\n{tail}")
    print(f"   done in {seconds:.0f} s (log: {log_path})", flush=True)
    return seconds


def clip_is_random(args: argparse.Namespace) -> bool:
    """Whether the demo's CLIP has random weights (no ``--clip-weights``, or ``random[:SEED]``)."""
    return args.clip_weights is None or random_clip_seed(args.clip_weights) is not None


def clip_weights_value(args: argparse.Namespace) -> str:
    """The CAM step's ``--clip-weights``: the demo's own, or ``random:<--seed>`` (also for a bare ``random``),
    which the CAM script builds itself (:mod:`priors.clip_weights`)."""
    value = args.clip_weights
    if value is None or value == RANDOM_WEIGHTS:
        value = f"{RANDOM_WEIGHTS}:{args.seed}"
    if random_clip_seed(value) is None:
        return str(value)
    print(f"NOTE: CLIP RN50 has RANDOM weights (--clip-weights {value}; none can be downloaded here):\n"
          "      its Grad-CAM priors are not object masks. Pass --clip-weights RN50.pt for real priors.")
    return value


def write_random_backbone(args: argparse.Namespace, weights_dir: Path) -> str:
    """A seeded random backbone state dict (``--pretrain-epochs 0`` without ``--backbone-weights``)."""
    path = weights_dir / f"{args.backbone}_random.pth"
    torch.manual_seed(args.seed)
    atomic_torch_save(build_backbone(args.backbone, "none").state_dict(), path)
    print(f"NOTE: the {args.backbone} backbone has RANDOM weights (--pretrain-epochs 0): the frozen features are\n"
          "      random convolutions, so the head can learn where an object is but not which one the support shows.")
    return str(path)


RESULTS_NAME, QUALITATIVE_NAME, EPISODES_NAME = "results.json", "qualitative.png", "test_episodes.png"
PRIOR_QUALITY_DIR = "prior_quality"  # evaluate_priors.py's report on the demo's CAM priors
CAM_PROVENANCE = "cams_made_for.json"  # which images and CLIP weights the CAM files in the data folder came from


def cam_provenance(data_root: Path, clip_path: str) -> str:
    """What the CAM files depend on: the synthetic benchmark's settings and the CLIP weights' SHA-256.

    A missing weights file gives ``null`` here; the CAM step then fails with its own message naming the file.
    """
    clip = Path(clip_path)
    if random_clip_seed(clip_path) is not None:  # random weights are made from their seed
        identity: Optional[str] = clip_path
    else:
        identity = sha256_file(clip) if clip.is_file() else None
    return json.dumps({"synthetic": json.loads((data_root / "synthetic.json").read_text()),
                       "clip_sha256": identity},
                      indent=2, sort_keys=True) + "\n"


def clear_stale_cams(data_root: Path, cam_dirs: Sequence[Path], made_for: str) -> None:
    """Delete CAM files made for other images or other CLIP weights.

    The CAM script skips pairs whose file exists, so a rerun with other settings would otherwise mix old and
    new priors under the same names.
    """
    record = data_root / CAM_PROVENANCE
    if record.is_file() and record.read_text() == made_for:
        return
    for cam_dir in cam_dirs:
        if cam_dir.exists():
            print(f"   removing CAM files made for other data or CLIP weights: {cam_dir}")
            shutil.rmtree(cam_dir)


def write_untrained_checkpoint(args: argparse.Namespace, backbone_path: str, path: Path) -> Path:
    """The model before training (same backbone as the trained one), in the released checkpoint format."""
    torch.manual_seed(args.seed)
    model = build_model(args.backbone, backbone_weights=backbone_path)
    return atomic_torch_save(released_state_dict(model), path)


def load_checkpoint(args: argparse.Namespace, checkpoint: Path) -> torch.nn.Module:
    """The demo's model (``--backbone``, ``--masking``) with ``checkpoint`` loaded, in eval mode on the CPU."""
    model = build_model(args.backbone, backbone_weights="none", masking=args.masking)
    load_model_state(model, checkpoint)
    return model.eval()


def test_dataset(args: argparse.Namespace, data_root: Path, cam_dirs: Sequence[Path]) -> Any:
    """Fold 0's 1-shot test episodes of the demo's benchmark (the ``--nepisodes`` ``test.py`` draws with seed 0)."""
    from data.dataset import build_dataset

    return build_dataset("pascal", datapath=data_root, fold=0, split="test", shot=1, img_size=args.img_size,
                         cam_train_path=cam_dirs[0], cam_val_path=cam_dirs[1], splitpath=data_root / "splits",
                         nepisodes=args.nepisodes, seed=0)


GREEN, RED, BLUE, ORANGE = (0, 200, 0), (220, 30, 30), (40, 90, 255), (255, 160, 0)


def _framed(tiles: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], 1)


def save_png(picture: Image.Image, path: Path) -> Path:
    """Write ``picture`` to ``path`` as a PNG, atomically."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return atomic_write_bytes(buffer.getvalue(), path)


def _with_header(grid: np.ndarray, titles: Sequence[str]) -> Image.Image:
    """``grid`` under a white strip naming its equally wide columns."""
    header = Image.new("RGB", (grid.shape[1], 14), "white")
    draw = ImageDraw.Draw(header)
    width = grid.shape[1] // len(titles)
    for i, title in enumerate(titles):
        draw.text((i * width + 3, 1), title, fill=(0, 0, 0))
    picture = Image.new("RGB", (grid.shape[1], grid.shape[0] + 14), "white")
    picture.paste(header, (0, 0))
    picture.paste(Image.fromarray(grid), (0, 14))
    return picture


def test_episodes_grid(args: argparse.Namespace, dataset: Any, checkpoints: dict[str, Path], path: Path, *,
                       device: torch.device, rows: int = 6) -> Path:
    """A PNG grid of the first test episodes: query | ground truth | CAM prior | untrained | trained (1-shot)."""
    from common.vis import apply_mask, to_uint8_image
    from engine.loops import to_device

    rows = min(rows, len(dataset))
    batch = torch.utils.data.default_collate([dataset[i] for i in range(rows)])
    predictions = {}
    for name, checkpoint in checkpoints.items():
        with torch.no_grad():
            predictions[name] = load_checkpoint(args, checkpoint).to(device).predict_mask_nshot(
                to_device(batch, device), nshot=1, stage=args.stage).cpu().numpy()
    lines = []
    for i in range(rows):
        image = to_uint8_image(batch["query_img"][i])
        cam = resize_bilinear(batch["query_cam"][i][None, None].float(), image.shape[:2])[0, 0].numpy()
        cam_rgb = (np.stack([cam, cam, cam], -1).clip(0, 1) * 255).astype(np.uint8)
        tiles = [image, apply_mask(image, batch["query_mask"][i].numpy() > 0.5, GREEN), cam_rgb]
        tiles += [apply_mask(image, predictions[name][i] > 0.5, color) for name, color in zip(checkpoints, (RED, BLUE))]
        lines.append(_framed(tiles))
    return save_png(_with_header(np.concatenate(lines, 0), ["query", "truth", "CAM", *checkpoints]), path)


def two_object_queries(dataset: Any, limit: int) -> list[tuple[str, int, int, str, str]]:
    """Up to ``limit`` test images listed under two of the fold's test classes ``a < b``, each with a support
    image of ``a`` not listed under ``b`` and one of ``b`` not listed under ``a``: (query, a, b, support_a,
    support_b), in the split file's order."""
    from apps.support_swap import listed_classes

    listed = listed_classes(dataset)
    found = []
    for query, classes in listed.items():
        if len(classes) < 2:
            continue
        a, b = sorted(classes)[:2]
        support_a = next((n for n in dataset.img_metadata_classwise[a] if n != query and b not in listed[n]), None)
        support_b = next((n for n in dataset.img_metadata_classwise[b] if n != query and a not in listed[n]), None)
        if support_a and support_b:
            found.append((query, a, b, support_a, support_b))
        if len(found) == limit:
            break
    return found


def _iou(pred: np.ndarray, mask: np.ndarray) -> float:
    union = np.logical_or(pred > 0.5, mask > 0.5).sum()
    return float(100.0 * np.logical_and(pred > 0.5, mask > 0.5).sum() / union) if union else 0.0


def two_support_figure(args: argparse.Namespace, dataset: Any, model: torch.nn.Module, path: Path,
                       rows: int = 3) -> list[dict[str, Any]]:
    """``qualitative.png``: queries holding objects of two test classes, each segmented once with a support of
    either class (support | prediction | other support | prediction | ground truth of both). Returns, per
    query, the IoU of each prediction with each class's mask."""
    from common.vis import apply_mask, to_uint8_image
    from data.episodes import Episode
    from engine.loops import to_device

    lines, records = [], []
    for query, a, b, support_a, support_b in two_object_queries(dataset, rows):
        tiles, masks, predictions = [], {}, {}
        for cls, support in ((a, support_a), (b, support_b)):
            batch = dataset.load_episode(Episode(query=query, supports=(support,), class_id=cls))
            device = next(model.parameters()).device
            with torch.no_grad():
                prediction = model.predict_mask_nshot(to_device(torch.utils.data.default_collate([batch]), device),
                                                      nshot=1, stage=args.stage)[0].cpu().numpy()
            image = to_uint8_image(batch["query_img"])
            tiles += [apply_mask(to_uint8_image(batch["support_imgs"][0]), batch["support_masks"][0].numpy(), BLUE),
                      apply_mask(image, (prediction > 0.5).astype(np.uint8), RED)]
            masks[cls], predictions[cls] = batch["query_mask"].numpy(), prediction
        truth = apply_mask(apply_mask(image, masks[a].astype(np.uint8), GREEN), masks[b].astype(np.uint8), ORANGE)
        lines.append(_framed([*tiles, truth]))
        records.append({"query": query, "classes": [a, b], "supports": [support_a, support_b],
                        "iou": {f"support {s} vs class {c}": _iou(predictions[s], masks[c])
                                for s in (a, b) for c in (a, b)}})
    titles = ["support A", "pred. (A)", "support B", "pred. (B)", "A green, B orange"]
    save_png(_with_header(np.concatenate(lines, 0), titles), path)
    return records


def check_flags(args: argparse.Namespace) -> None:
    """Flags the demo's steps would refuse only minutes in, checked before the first step."""
    if args.pretrain_epochs < 0:
        raise UserInputError(f"--pretrain-epochs must be 0 (no pretraining) or more, got {args.pretrain_epochs}")
    if args.pretrain_images_per_class < 1:
        raise UserInputError(f"--pretrain-images-per-class must be at least 1, got {args.pretrain_images_per_class}")


def check_demo_data(args: argparse.Namespace, dataset: Any) -> None:
    """The test episodes step 7 needs (two classes; a query holding two test classes), checked after step 1."""
    if len({episode.class_id for episode in dataset.episodes}) < 2:
        raise UserInputError(f"--nepisodes {args.nepisodes}: the control (step 7) needs test episodes of two "
                             f"classes or more, and the first {args.nepisodes} are all of one; raise --nepisodes")
    if not two_object_queries(dataset, 1):
        raise UserInputError(f"--images-per-class {args.images_per_class}: no test image holds objects of two test "
                             "classes (with supports of each), so qualitative.png cannot be drawn; raise it")


def pretrain_step(args: argparse.Namespace, weights_dir: Path, logs: Path) -> tuple[str, dict[str, Any]]:
    """Step 3: the backbone file the few-shot runs load, and what was done to make it (``backbone_pretraining``
    in ``results.json``)."""
    if args.backbone_weights is not None:
        return str(args.backbone_weights), {"done": False, "seconds": 0.0, "file": str(args.backbone_weights),
                                            "what": "none: --backbone-weights given"}
    if args.pretrain_epochs == 0:
        return write_random_backbone(args, weights_dir), {"done": False, "seconds": 0.0,
                                                          "what": "none: --pretrain-epochs 0 (random init)"}
    path = weights_dir / f"{args.backbone}_pretrained_fold0.pth"
    seconds = run_step(f"3/7 backbone pretraining: {args.backbone} classifies fold 0's training classes "
                       f"({args.pretrain_epochs} epochs)",
                       [sys.executable, "-m", "apps.pretrain", path, "--backbone", args.backbone, "--benchmark",
                        "pascal", "--fold", 0, "--seed", args.seed, "--img-size", args.img_size,
                        "--images-per-class", args.pretrain_images_per_class, "--epochs", args.pretrain_epochs,
                        "--max-distractors", args.max_distractors, "--device", args.device], logs / "pretrain.log")
    report = json.loads(path.with_suffix(".json").read_text())
    print(f"   held-out accuracy on new images of the training classes: {report['heldout_accuracy']:.1f}% "
          f"(chance {100 / len(report['classes']):.1f}%)")
    summary = {key: report[key] for key in ("classes", "test_classes_never_drawn", "images", "epochs", "img_size",
                                            "heldout_images", "heldout_accuracy")}
    return str(path), {"done": True, "file": str(path), "seconds": seconds,
                       "what": f"{args.backbone} trained from random init as a classifier of fold 0's "
                               f"{len(report['classes'])} training classes on rendered synthetic images (the "
                               "test classes never drawn); saved as a torchvision state dict and frozen",
                       **summary}


def prior_quality_step(args: argparse.Namespace, data_root: Path, val_cams: Path, out: Path,
                       logs: Path) -> dict[str, Any]:
    """Step 2, continued: ``evaluate_priors.py`` on fold 0's test pairs (the CAMs the test episodes read, at the
    size the model reads them); prints the mean IoU beside a whole-image mask's, and returns ``quality.json``."""
    run_step("2/7 quality of the CAM priors (fold 0 test pairs)",
             [sys.executable, "evaluate_priors.py", "--benchmark", "pascal", "--fold", 0, "--split", "val",
              "--priors", val_cams, "--out", out, "--datapath", data_root, "--splitpath", data_root / "splits",
              "--cam-size", args.img_size // FEATURE_STRIDE, "--no-progress"], logs / "evaluate_priors.log")
    report = json.loads((out / "quality.json").read_text())
    print(f"   mean IoU with the ground truth: {report['miou_best']:.1f} at the best threshold "
          f"{report['best_threshold']:.2f}, {report['miou_at_0.5']:.1f} at 0.5; a mask covering the whole image: "
          f"{report['miou_full_image']:.1f} ({out / 'quality.md'})")
    if clip_is_random(args):
        print("   CLIP is random here, so these priors carry no class: near the whole-image mask, i.e. chance.")
    return {key: report[key] for key in ("pairs", "cam_size", "best_threshold", "miou_best", "miou_at_0.5",
                                         "miou_full_image")} | {"report": str(out / "quality.json")}


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the demo; returns the ``results.json`` content."""
    from apps.support_swap import wrong_support_test

    started = time.perf_counter()
    out = args.out.resolve()
    # the steps run from the repository root: files named relative to where the demo was started are resolved
    def from_here(value: Optional[str]) -> Optional[str]:
        keep = value is None or value.lower() in ("none", "imagenet")
        return value if keep else str(Path(value).expanduser().resolve())

    if random_clip_seed(args.clip_weights) is None:  # "random[:SEED]" names no file
        args.clip_weights = from_here(args.clip_weights)
    args.backbone_weights = from_here(args.backbone_weights)
    data_root, weights_dir, logs = out / "data", out / "weights", out / "logs"
    python = sys.executable
    prepare_output_folder(out, "--out")
    print(f"IMR-HSNet demo: everything goes to {out}")
    for stale in ("train", "test", "untrained", PRIOR_QUALITY_DIR):  # a rerun starts its runs afresh (data and CAMs are reused)
        shutil.rmtree(out / stale, ignore_errors=True)
    for stale in (RESULTS_NAME, QUALITATIVE_NAME, EPISODES_NAME):  # never left beside a rerun's logs
        (out / stale).unlink(missing_ok=True)

    run_step("1/7 synthetic benchmark (PASCAL-5i layout)",
             [python, "-m", "data.synthetic", data_root, "--seed", args.seed, "--benchmark", "pascal",
              "--images-per-class", args.images_per_class, "--max-distractors", args.max_distractors],
             logs / "synthetic.log")
    cam_dirs = tuple(data_root / name for name in DEFAULT_CAM_DIRS["pascal"])  # (train, val)
    dataset = test_dataset(args, data_root, cam_dirs)
    check_demo_data(args, dataset)  # before the long steps
    clip_path = clip_weights_value(args)
    made_for = cam_provenance(data_root, clip_path)
    clear_stale_cams(data_root, cam_dirs, made_for)
    atomic_write_text(made_for, data_root / CAM_PROVENANCE)  # before the job, so an interrupted one resumes
    run_step("2/7 CLIP Grad-CAM priors for every (image, class) pair",
             [python, "generate_cam_voc.py", "--datapath", data_root, "--splitpath", data_root / "splits",
              "--traincampath", cam_dirs[0], "--valcampath", cam_dirs[1],
              "--clip-weights", clip_path, "--device", args.device, "--nworker", args.nworker, "--no-progress",
              "--overwrite"],
             logs / "generate_cam_voc.log")
    prior_quality = prior_quality_step(args, data_root, cam_dirs[1], out / PRIOR_QUALITY_DIR, logs)
    backbone_path, pretraining = pretrain_step(args, weights_dir, logs)

    common = ["--datapath", data_root, "--splitpath", data_root / "splits", "--benchmark", "pascal", "--fold", 0,
              "--traincampath", cam_dirs[0], "--valcampath", cam_dirs[1], "--backbone", args.backbone,
              "--img-size", args.img_size, "--stage", args.stage, "--masking", args.masking, "--device", args.device]
    checkpoints = {"untrained": write_untrained_checkpoint(args, backbone_path, out / "untrained" / "best_model.pt"),
                   "trained": out / "train" / "best_model.pt"}

    def evaluate(name: str, step: str) -> dict[str, dict[str, float]]:
        run_dir = out / "test" / name
        run_step(f"{step} test.py, {name} model, 1-shot and 5-shot",
                 [python, "test.py", *common, "--load", checkpoints[name], "--nshot", 1, 5,
                  "--nepisodes", args.nepisodes, "--bsz", 10, "--nworker", 0, "--logpath", run_dir],
                 logs / f"test_{name}.log")
        runs = json.loads((run_dir / "results.json").read_text())["runs"]
        return {f"{run['nshot']}shot": {"miou": run["miou"], "fbiou": run["fb_iou"]} for run in runs}

    results: dict[str, Any] = {"untrained": evaluate("untrained", "4/7")}
    run_step(f"5/7 train.py, fold 0, {args.niter} epochs at {args.img_size} px",
             [python, "train.py", *common, "--nepisodes", args.val_episodes, "--backbone-weights", backbone_path,
              "--niter", args.niter, "--bsz", args.bsz, "--lr", args.lr, "--seed", args.seed,
              "--nworker", args.nworker, "--logpath", out / "train"], logs / "train.log")
    results["trained"] = evaluate("trained", "6/7")

    print("\n== 7/7 control: the trained model, 1-shot, each query's supports taken from another class", flush=True)
    step_started = time.perf_counter()
    device = resolve_device(args.device)
    trained = load_checkpoint(args, checkpoints["trained"]).to(device)
    control = wrong_support_test(trained, dataset, nshot=1, stage=args.stage, device=device, seed=args.seed)
    results["wrong_support"] = {"miou": control.miou, "fbiou": control.fb_iou, "nshot": 1,
                                "episodes": control.episodes}
    results["two_supports"] = two_support_figure(args, dataset, trained, out / QUALITATIVE_NAME)
    grid = test_episodes_grid(args, dataset, checkpoints, out / EPISODES_NAME, device=device)
    print(f"   done in {time.perf_counter() - step_started:.0f} s")

    results["distractors"] = {"max_per_image": args.max_distractors,
                              "test_queries_with_other_objects": share_with_other_objects(dataset)}
    results["backbone_pretraining"] = pretraining
    results["cam_priors"] = prior_quality
    results["settings"] = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    random_backbone = (args.pretrain_epochs == 0 if args.backbone_weights is None
                       else args.backbone_weights.lower() == "none")
    results["random_weights"] = {"clip": random_clip_seed(clip_path) is not None, "backbone": random_backbone}
    results["seconds"] = time.perf_counter() - started
    atomic_write_text(json.dumps(results, indent=2) + "\n", out / RESULTS_NAME)

    print("\n              1-shot mIoU  1-shot FB-IoU  5-shot mIoU  5-shot FB-IoU")
    for name in ("untrained", "trained"):
        one, five = results[name]["1shot"], results[name]["5shot"]
        print(f"{name:>10}    {one['miou']:9.2f}  {one['fbiou']:13.2f}  {five['miou']:11.2f}  {five['fbiou']:13.2f}")
    wrong = results["wrong_support"]
    print(f"{'wrong supp.':>11}   {wrong['miou']:9.2f}  {wrong['fbiou']:13.2f}  (1-shot, supports of another class)")
    gain = results["trained"]["1shot"]["miou"] - results["untrained"]["1shot"]["miou"]
    drop = results["trained"]["1shot"]["miou"] - wrong["miou"]
    print(f"\n1-shot mIoU gain from training: {gain:+.2f} points; "
          f"supports of another class cost {drop:.2f} points")
    print(f"results:      {out / RESULTS_NAME}")
    own = np.mean([row["iou"][f"support {c} vs class {c}"] for row in results["two_supports"] for c in row["classes"]])
    other = np.mean([row["iou"][f"support {a} vs class {b}"] for row in results["two_supports"]
                     for a, b in (row["classes"], row["classes"][::-1])])
    print(f"qualitative:  {out / QUALITATIVE_NAME}  (queries with two objects, one prediction per support: "
          f"mean IoU {own:.1f} with the support's class, {other:.1f} with the other)")
    print(f"episodes:     {grid}  (query | ground truth | CAM prior | untrained | trained)")
    random_clip = " (CLIP random: near chance)" if clip_is_random(args) else ""
    print(f"CAM priors:   {out / PRIOR_QUALITY_DIR / 'quality.md'}  (mean IoU {prior_quality['miou_best']:.1f} at "
          f"the best threshold; a whole-image mask {prior_quality['miou_full_image']:.1f}{random_clip})")
    print(f"table:        {out / 'test' / 'trained' / 'table.png'}  (test.py's per-fold mIoU chart, 1- and 5-shot)")
    print(f"TensorBoard:  tensorboard --logdir {out / 'train'}")
    print(f"total time:   {results['seconds']:.0f} s")
    return results


def share_with_other_objects(dataset: Any) -> float:
    """The share (%) of ``dataset``'s test episodes whose query shows an object of another class than the
    episode's (any class label other than the episode's, boundary 255 and background aside, in its mask file)."""
    with_others = 0
    for episode in dataset.episodes:
        labels = set(np.unique(np.asarray(Image.open(dataset.mask_path(episode.query)))).tolist())
        with_others += bool(labels - {0, IGNORE_LABEL, episode.class_id + 1})
    return 100.0 * with_others / len(dataset.episodes)


def run(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``demo.py``: 0 done, 2 bad input (one line naming the step and its log), 1 a step
    crashed (its log's tail is printed)."""
    args = build_parser().parse_args(argv)

    def demo() -> int:
        check_flags(args)
        try:
            main(args)
        except DemoStepError:
            raise
        except RuntimeError as exc:
            print(f"\ndemo failed: {exc}", file=sys.stderr)
            return 1
        return 0

    return run_cli(demo, "demo.py")
