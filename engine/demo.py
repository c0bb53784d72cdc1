"""``make demo``: the whole method on the embedded synthetic benchmark, on a laptop CPU.

Every step runs the real command a researcher would run, in a subprocess:

1. ``python -m data.synthetic``      writes a PASCAL-5i-layout benchmark;
2. ``generate_cam_voc.py``            CLIP RN50 Grad-CAM priors for every (image, class) pair;
3. ``test.py``                        the untrained model, 1-shot and 5-shot;
4. ``train.py``                       fold 0 at a reduced image size;
5. ``test.py``                        the trained model, 1-shot and 5-shot;

then prints a table, writes ``results.json``, a PNG grid of qualitative results, and says where the
TensorBoard logs are. Without ``--clip-weights`` / ``--backbone-weights`` the CLIP model and the backbone are
randomly initialised (this machine cannot download weights), and the output says so: the demo shows the
pipeline working and the model learning, not the paper's numbers.
"""
from __future__ import annotations

import argparse
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
from PIL import Image

from common.cli import EXIT_BAD_INPUT, ArgumentParser, HelpFormatter, run_cli
from common.errors import UserInputError
from common.io import atomic_torch_save, atomic_write_text
from common.paths import REPO_ROOT
from common.resize import resize_bilinear
from data.benchmarks import DEFAULT_CAM_DIRS
from model.backbone import BACKBONES
from model.checkpoint import released_state_dict
logger = logging.getLogger("demo")


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``demo.py``; the defaults are what ``make demo`` runs."""
    parser = ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "demo_out", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, weights and training episodes")
    parser.add_argument("--backbone", default="vgg16", choices=tuple(BACKBONES), help="feature extractor")
    parser.add_argument("--backbone-weights", default=None,
                        help="torchvision state-dict file of the backbone (default: random init, seeded)")
    parser.add_argument("--clip-weights", default=None,
                        help="OpenAI CLIP RN50.pt (default: random init of RN50's shapes, seeded)")
    parser.add_argument("--images-per-class", type=int, default=12, help="synthetic images per class and split")
    parser.add_argument("--max-distractors", type=int, default=0, choices=range(3),
                        help="objects of other classes per synthetic image, at most (the benchmark's own default "
                             "is 2; 0 keeps the task learnable in minutes with random backbone and CLIP, see README)")
    parser.add_argument("--img-size", type=int, default=96, help="input side for training and testing")
    parser.add_argument("--niter", type=int, default=8, help="training epochs")
    parser.add_argument("--bsz", type=int, default=4, help="training episodes per batch")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (the released default)")
    parser.add_argument("--stage", type=int, default=2, help="IMR refinement stages")
    parser.add_argument("--nepisodes", type=int, default=100, help="test episodes (1-shot and 5-shot)")
    parser.add_argument("--val-episodes", type=int, default=50, help="validation episodes after each epoch")
    parser.add_argument("--nworker", type=int, default=2, help="data-loader workers")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
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


def write_random_weights(args: argparse.Namespace, weights_dir: Path) -> tuple[str, str]:
    """Seeded random CLIP RN50 and backbone state dicts (unless files were given); returns their paths."""
    from model.backbone import build_backbone
    from model.clip_gradcam import random_clip_state_dict

    clip_path = args.clip_weights
    if clip_path is None:
        clip_path = weights_dir / "clip_rn50_random.pt"
        atomic_torch_save(random_clip_state_dict(seed=args.seed), clip_path)
        print("NOTE: CLIP RN50 has RANDOM weights (no --clip-weights given, and none can be downloaded here):\n"
              "      its Grad-CAM priors are not object masks. Pass --clip-weights RN50.pt for real priors.")
    backbone_path = args.backbone_weights
    if backbone_path is None:
        backbone_path = weights_dir / f"{args.backbone}_random.pth"
        torch.manual_seed(args.seed)
        atomic_torch_save(build_backbone(args.backbone, "none").state_dict(), backbone_path)
        print(f"NOTE: the {args.backbone} backbone has RANDOM weights (no --backbone-weights given): the frozen "
              "features are\n      random convolutions, so only the IMR-HSNet head learns.")
    return str(clip_path), str(backbone_path)


CAM_PROVENANCE = "cams_made_for.json"  # which images and CLIP weights the CAM files in the data folder came from


def cam_provenance(data_root: Path, clip_path: str) -> str:
    """What the CAM files depend on: the synthetic benchmark's settings and the CLIP weights' SHA-256.

    A missing weights file gives ``null`` here; the CAM step then fails with its own message naming the file.
    """
    from common.io import sha256_file

    clip = Path(clip_path)
    return json.dumps({"synthetic": json.loads((data_root / "synthetic.json").read_text()),
                       "clip_sha256": sha256_file(clip) if clip.is_file() else None},
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
    from model import build_model

    torch.manual_seed(args.seed)
    model = build_model(args.backbone, backbone_weights=backbone_path)
    return atomic_torch_save(released_state_dict(model), path)


def qualitative_grid(args: argparse.Namespace, data_root: Path, cam_dirs: Sequence[Path],
                     checkpoints: dict[str, Path], path: Path, rows: int = 6) -> Path:
    """A PNG grid: query | ground truth | CAM prior | untrained prediction | trained prediction (1-shot)."""
    from common.vis import apply_mask, to_uint8_image
    from data.dataset import build_dataset
    from model import build_model
    from model.checkpoint import load_model_state

    dataset = build_dataset("pascal", datapath=data_root, fold=0, split="test", shot=1, img_size=args.img_size,
                            cam_train_path=cam_dirs[0], cam_val_path=cam_dirs[1], splitpath=data_root / "splits",
                            nepisodes=rows, seed=0)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(rows)])
    predictions = {}
    for name, checkpoint in checkpoints.items():
        model = build_model(args.backbone, backbone_weights="none")
        load_model_state(model, checkpoint)
        model.eval()
        with torch.no_grad():
            predictions[name] = model.predict_mask_nshot(batch, nshot=1, stage=args.stage).cpu().numpy()

    green, red, blue = (0, 200, 0), (220, 30, 30), (40, 90, 255)
    lines = []
    for i in range(rows):
        image = to_uint8_image(batch["query_img"][i])
        size = image.shape[:2]
        cam = resize_bilinear(batch["query_cam"][i][None, None].float(), size)[0, 0].numpy()
        cam_rgb = (np.stack([cam, cam, cam], -1).clip(0, 1) * 255).astype(np.uint8)
        tiles = [image, apply_mask(image, batch["query_mask"][i].numpy() > 0.5, green), cam_rgb]
        tiles += [apply_mask(image, predictions[name][i] > 0.5, color)
                  for name, color in zip(checkpoints, (red, blue))]
        lines.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], 1))
    grid = np.concatenate(lines, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the demo; returns the ``results.json`` content."""
    started = time.perf_counter()
    out = args.out.resolve()
    data_root, weights_dir, logs = out / "data", out / "weights", out / "logs"
    python = sys.executable
    print(f"IMR-HSNet demo: everything goes to {out}")
    for stale in ("train", "test", "untrained"):  # a rerun starts its runs afresh (data and CAMs are reused)
        shutil.rmtree(out / stale, ignore_errors=True)

    run_step("1/5 synthetic benchmark (PASCAL-5i layout)",
             [python, "-m", "data.synthetic", data_root, "--seed", args.seed, "--benchmark", "pascal",
              "--images-per-class", args.images_per_class, "--max-distractors", args.max_distractors],
             logs / "synthetic.log")
    clip_path, backbone_path = write_random_weights(args, weights_dir)
    cam_dirs = tuple(data_root / name for name in DEFAULT_CAM_DIRS["pascal"])  # (train, val)
    made_for = cam_provenance(data_root, clip_path)
    clear_stale_cams(data_root, cam_dirs, made_for)
    atomic_write_text(made_for, data_root / CAM_PROVENANCE)  # before the job, so an interrupted one resumes
    run_step("2/5 CLIP Grad-CAM priors for every (image, class) pair",
             [python, "generate_cam_voc.py", "--datapath", data_root, "--splitpath", data_root / "splits",
              "--traincampath", cam_dirs[0], "--valcampath", cam_dirs[1],
              "--clip-weights", clip_path, "--device", args.device, "--nworker", args.nworker, "--no-progress",
              "--overwrite"],
             logs / "generate_cam_voc.log")

    common = ["--datapath", data_root, "--splitpath", data_root / "splits", "--benchmark", "pascal", "--fold", 0,
              "--traincampath", cam_dirs[0], "--valcampath", cam_dirs[1],
              "--backbone", args.backbone, "--img-size", args.img_size, "--stage", args.stage, "--device", args.device]
    checkpoints = {"untrained": write_untrained_checkpoint(args, backbone_path, out / "untrained" / "best_model.pt"),
                   "trained": out / "train" / "best_model.pt"}

    def evaluate(name: str, step: str) -> dict[str, dict[str, float]]:
        numbers = {}
        for nshot in (1, 5):
            run_dir = out / "test" / f"{name}_{nshot}shot"
            run_step(f"{step} test.py, {name} model, {nshot}-shot",
                     [python, "test.py", *common, "--load", checkpoints[name], "--nshot", nshot,
                      "--nepisodes", args.nepisodes, "--bsz", 10,
                      "--nworker", 0, "--logpath", run_dir], logs / f"test_{name}_{nshot}shot.log")
            result = json.loads((run_dir / "results.json").read_text())
            numbers[f"{nshot}shot"] = {"miou": result["miou"], "fbiou": result["fb_iou"]}
        return numbers

    results: dict[str, Any] = {"untrained": evaluate("untrained", "3/5")}
    run_step(f"4/5 train.py, fold 0, {args.niter} epochs at {args.img_size} px",
             [python, "train.py", *common, "--nepisodes", args.val_episodes, "--backbone-weights", backbone_path,
              "--niter", args.niter,
              "--bsz", args.bsz, "--lr", args.lr, "--seed", args.seed, "--nworker", args.nworker,
              "--logpath", out / "train"], logs / "train.log")
    results["trained"] = evaluate("trained", "5/5")

    grid = qualitative_grid(args, data_root, cam_dirs, checkpoints, out / "qualitative.png")
    results["settings"] = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    results["random_weights"] = {"clip": args.clip_weights is None, "backbone": args.backbone_weights is None}
    atomic_write_text(json.dumps(results, indent=2) + "\n", out / "results.json")

    print("\n              1-shot mIoU  1-shot FB-IoU  5-shot mIoU  5-shot FB-IoU")
    for name in ("untrained", "trained"):
        one, five = results[name]["1shot"], results[name]["5shot"]
        print(f"{name:>10}    {one['miou']:9.2f}  {one['fbiou']:13.2f}  {five['miou']:11.2f}  {five['fbiou']:13.2f}")
    gain = results["trained"]["1shot"]["miou"] - results["untrained"]["1shot"]["miou"]
    print(f"\n1-shot mIoU gain from training: {gain:+.2f} points")
    print(f"results:      {out / 'results.json'}")
    print(f"qualitative:  {grid}  (query | ground truth | CAM prior | untrained | trained)")
    print(f"TensorBoard:  tensorboard --logdir {out / 'train'}")
    print(f"total time:   {time.perf_counter() - started:.0f} s")
    return results


def run(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``demo.py``: 0 done, 2 bad input (one line naming the step and its log), 1 a step
    crashed (its log's tail is printed)."""
    args = build_parser().parse_args(argv)

    def demo() -> int:
        try:
            main(args)
        except DemoStepError:
            raise
        except RuntimeError as exc:
            print(f"\ndemo failed: {exc}", file=sys.stderr)
            return 1
        return 0

    return run_cli(demo, "demo.py")
