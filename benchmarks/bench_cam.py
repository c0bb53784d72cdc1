"""Benchmark: the whole CAM job (ours) against the released per-image procedure, same weights, same machine.

Ours: ``priors.cam_job.run_cam_job`` on every pair of the benchmark's split lists (each pair once, prompts
encoded once, batched trunk forward, head-only backward, parallel decoding), timed from building the
Grad-CAM object (prompt encoding included) to the last file written.

Released: its job computes, for PASCAL, every training pair three times (the four training datasets each
read the other three folds' lists) plus the validation pairs; for COCO each pair once. Each computation
opens the image, preprocesses it, builds a new GradCAM, runs CLIP forward *with the text tower over all
prompts* and backward through everything, resizes with cv2 and saves. The per-pair time is measured on
``--released-pairs`` computations spread over the job and multiplied by the job's computation count
(``--released-pairs 0`` times all of them). The files those computations write are compared with ours for the
same pairs (ours computed again for them, same precision): the largest and the mean absolute difference.

* ``--released-repo PATH`` (a checkout of Whileherham/IMR-HSNet): its own ``clip.py``/``model_clip.py`` and
  vendored pytorch_grad_cam are run in a subprocess (``.cuda()`` made a no-op on the CPU).
* otherwise: the released procedure re-implemented with the installed pytorch-grad-cam
  (``tests/clip_reference.py``), and the report says so.

Weights: ``--clip-weights`` or a random RN50-shaped CLIP (identical for both sides). Example::

    python benchmarks/bench_cam.py --benchmark pascal --released-repo /path/to/IMR-HSNet
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from common.device import resolve_device  # noqa: E402
from data.benchmarks import CLASS_NAMES, FOLD_BENCHMARKS  # noqa: E402
from data.splits import read_coco_split, read_pascal_split  # noqa: E402
from priors import cam_job  # noqa: E402
from priors.recipes import clip_gradcam as cg  # noqa: E402
from priors.recipes.gradcam_rn50 import GradCamRN50  # noqa: E402
from tests.clip_reference import per_image_reference_cams  # noqa: E402

# Runs in a subprocess with the released repository first on sys.path (its pytorch_grad_cam is a different,
# older copy than the installed one). Mirrors generate_cam_*.get_cam_from_alldata for a list of pairs.
_RELEASED_TIMER = r"""
import json, sys, time, os
import torch
cfg = json.loads(sys.stdin.read())
sys.path.insert(0, cfg["repo"])
cuda = cfg["device"].startswith("cuda")
if not cuda:  # shim: the released loop calls GradCAM(..., use_cuda=True), which calls .cuda()
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
os.chdir(cfg["repo"])
import clip, cv2
from PIL import Image
from pytorch_grad_cam import GradCAM
model, preprocess = clip.load(cfg["weights"], cfg["device"], jit=False)
device = cfg["device"]
text_inputs = torch.cat([clip.tokenize(f"a photo of a {c}") for c in cfg["classes"]]).to(device)
def one(img_path, class_name_id, save_path):
    img = Image.open(img_path)
    img_input = preprocess(img).unsqueeze(0).to(device)
    model.get_text_features(text_inputs)
    target_layers = [model.visual.layer4[-1]]
    cam = GradCAM(model=model, target_layers=target_layers, use_cuda=True)
    grayscale_cam = cam(input_tensor=img_input, target_category=class_name_id)
    grayscale_cam = cv2.resize(grayscale_cam[0, :], (50, 50))
    torch.save(torch.from_numpy(grayscale_cam), save_path)
one(*cfg["pairs"][0])  # warm-up, not timed
if cuda: torch.cuda.synchronize()
start = time.perf_counter()
for p in cfg["pairs"]:
    one(*p)
if cuda: torch.cuda.synchronize()
print(json.dumps({"seconds": time.perf_counter() - start, "n": len(cfg["pairs"])}))
"""


def released_computations(benchmark: str, root: Path) -> list[tuple[Path, int]]:
    """(image, class) computations of the released job, repeats included, in its order."""
    splits = root / "splits"
    out: list[tuple[Path, int]] = []
    if benchmark == "pascal":
        images = root / "VOC2012" / "JPEGImages"
        for split in ("trn", "val"):
            for fold in range(4):
                folds = [g for g in range(4) if g != fold] if split == "trn" else [fold]
                for g in folds:
                    out += [(images / f"{n}.jpg", c) for n, c in read_pascal_split(splits, split, g)]
    else:
        images = root / "COCO2014"
        for split, pick in (("trn", lambda c: (c % 4 + 1) % 4), ("val", lambda c: c % 4)):
            lists = [read_coco_split(splits, split, f) for f in range(4)]
            out += [(images / n, c) for c in range(80) for n in lists[pick(c)][c]]
    return out


def _sample(items: list, k: int) -> list:
    if k <= 0 or k >= len(items):
        return list(items)
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]


def time_released_repo(repo: Path, weights: Path, device: str, classes, sample, tmp: Path) -> float:
    """Seconds per computation of the released code itself (subprocess)."""
    pairs = [(str(p), int(c), str(tmp / f"released_{i}.pt")) for i, (p, c) in enumerate(sample)]
    cfg = dict(repo=str(repo), weights=str(weights), device=device, classes=list(classes), pairs=pairs)
    # our packages must not shadow the released ones of the same names (common, model): drop this repository
    # from PYTHONPATH, keep the rest (on the GPU machine the carried wheels live there: ftfy, ttach)
    kept = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if entry and Path(entry).resolve() != REPO_ROOT]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(kept), PYTHONDONTWRITEBYTECODE="1")  # checkout untouched
    proc = subprocess.run([sys.executable, "-c", _RELEASED_TIMER], input=json.dumps(cfg), text=True,
                          capture_output=True, env=env, cwd=repo)
    if proc.returncode != 0:
        raise RuntimeError(f"the released code failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["seconds"] / result["n"]


def time_reimplemented(model, classes, sample, tmp: Path) -> float:
    """Seconds per computation of the released procedure re-implemented with the installed pytorch-grad-cam
    (each map saved as ``tmp/released_{i}.pt``, as the released side does)."""
    def one(path, cls, out):
        with Image.open(path) as img:
            cams = per_image_reference_cams(model, [img], [cls], classes)
        torch.save(cams[0].clone(), out)

    one(*sample[0], tmp / "released_0.pt")  # warm-up
    _sync(model)
    start = time.perf_counter()
    for i, (path, cls) in enumerate(sample):
        one(path, cls, tmp / f"released_{i}.pt")
    _sync(model)
    return (time.perf_counter() - start) / len(sample)


def compare_with_released(recipe, sample, tmp: Path) -> dict[str, float]:
    """Ours on the released side's timed pairs, each map against the file the released side wrote for it
    (``tmp/released_{i}.pt``): the largest and the mean absolute difference over all pixels."""
    pairs = [cam_job.CamPair(Path(path), int(cls), tmp / "compare" / f"{i}.pt") for i, (path, cls) in enumerate(sample)]
    cam_job.run_cam_job(pairs, recipe, bsz=len(pairs), nworker=0, progress=False)
    diffs = torch.stack([(torch.load(pair.out_path, map_location="cpu").float() -
                          torch.load(tmp / f"released_{i}.pt", map_location="cpu").float()).abs()
                         for i, pair in enumerate(pairs)])
    return {"compared_pairs": len(pairs), "max_abs_diff": float(diffs.max()), "mean_abs_diff": float(diffs.mean())}


def _sync(model) -> None:
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", type=str, default=None, help="synthetic benchmark root (default: make one)")
    parser.add_argument("--benchmark", choices=FOLD_BENCHMARKS, default="pascal")
    parser.add_argument("--clip-weights", type=str, default=None, help="default: random RN50-shaped weights")
    parser.add_argument("--released-repo", type=lambda text: str(Path(text).resolve()), default=None,
                        help="checkout of Whileherham/IMR-HSNet")
    parser.add_argument("--released-pairs", type=int, default=6,
                        help="released computations to time (0: the whole released job)")
    parser.add_argument("--ours-only", action="store_true", help="time ours only (no released side)")
    parser.add_argument("--device", type=str, default="auto")
    parser.add_argument("--bsz", type=int, default=32)
    parser.add_argument("--nworker", type=int, default=2)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--max-pairs", type=int, default=0,
                        help="ours: only the first N distinct pairs (0: all); the released job is scaled alike")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                        help="ours: CLIP's weights in float32 or float16 (the released code on a GPU: float16)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench_cam_"))
    try:
        run(args, device, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, device: torch.device, tmp: Path) -> None:
    """The benchmark itself, its files under ``tmp``."""
    root = Path(args.root) if args.root else None
    if root is None:
        from data.synthetic import make_benchmark
        root = make_benchmark(tmp / "synthetic", seed=0, benchmarks=FOLD_BENCHMARKS)
    weights = Path(args.clip_weights) if args.clip_weights else tmp / "rn50_random.pt"
    if not args.clip_weights:
        torch.save(cg.random_clip_state_dict(0), weights)
    classes = CLASS_NAMES[args.benchmark]
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch threads {torch.get_num_threads()}, benchmark {args.benchmark}, root {root}")

    model = cg.load_clip(weights, device=device, precision=args.precision)
    # ---- ours: the whole job
    if args.benchmark == "pascal":
        pairs = cam_job.pascal_pairs(root / "VOC2012" / "JPEGImages", root / "splits", tmp / "CAM_Train",
                                     tmp / "CAM_Val")
    else:
        pairs = cam_job.coco_pairs(root / "COCO2014", root / "splits", tmp / "CAM_COCO")
    share = 1.0
    if args.max_pairs > 0 and len(pairs) > args.max_pairs:
        share, pairs = args.max_pairs / len(pairs), pairs[:args.max_pairs]
    _sync(model)
    start = time.perf_counter()
    cam = cg.ClipGradCAM(model, classes, amp=args.amp)
    recipe = GradCamRN50(cam, None)
    summary = cam_job.run_cam_job(pairs, recipe, bsz=args.bsz, nworker=args.nworker, progress=False)
    _sync(model)
    ours_s = time.perf_counter() - start
    assert summary.computed == len(pairs), summary
    print(f"ours:     {len(pairs)} pairs (each once) in {ours_s:.1f}s = {len(pairs) / ours_s:.2f} pairs/s "
          f"(bsz {args.bsz}, {args.nworker} workers, {cam.precision})")
    record = {"bench": "cam", "device": str(device), "precision": cam.precision, "benchmark": args.benchmark,
              "pairs": len(pairs), "ours_pairs_per_s": len(pairs) / ours_s}
    print("RESULT " + json.dumps({**record, "side": "ours"}), flush=True)  # kept if the released side fails

    if args.ours_only:
        return
    # ---- released
    computations = released_computations(args.benchmark, root)
    sample = _sample(computations, args.released_pairs)
    if args.released_repo and Path(args.released_repo, "generate_cam_voc.py").is_file():
        what = f"released code ({args.released_repo})"
        per_pair = time_released_repo(Path(args.released_repo), weights, str(device), classes, sample, tmp)
    else:
        if args.released_repo:
            print(f"--released-repo {args.released_repo}: not a checkout of the released code")
        what = "released procedure re-implemented with the installed pytorch-grad-cam (no --released-repo)"
        per_pair = time_reimplemented(model, classes, sample, tmp)
    released_s = per_pair * len(computations) * share
    diff = compare_with_released(recipe, sample, tmp)
    print(f"released: {what}")
    print(f"          {len(computations)} computations ({len(computations) / len(pairs):.2f} per distinct pair); "
          f"{per_pair:.3f}s each (timed on {len(sample)}) -> job {released_s:.1f}s = "
          f"{len(pairs) / released_s:.3f} distinct pairs/s")
    print(f"speed-up: per computation {per_pair / (ours_s / len(pairs)):.1f}x, "
          f"whole job {released_s / ours_s:.1f}x")
    print(f"files: ours ({cam.precision}) against the released side's on its {diff['compared_pairs']} timed pairs: "
          f"max |diff| {diff['max_abs_diff']:.4g}, mean {diff['mean_abs_diff']:.4g}")
    print("RESULT " + json.dumps({**record, "side": "both", "released": what,
                                  "released_pairs_per_s": len(pairs) / released_s,
                                  "job_speedup": released_s / ours_s, **diff}), flush=True)


if __name__ == "__main__":
    main()
