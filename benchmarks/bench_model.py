"""Speed of our IMR-HSNet against the released model, measured in the same run on the same device.

    python benchmarks/bench_model.py --released-repo /path/to/IMR-HSNet [--backbone vgg16] [--size 400]
           [--bsz 2] [--stage 2] [--repeats 3] [--device cpu]

Two measurements per model, with the same random weights and inputs, alternating ours / released so that
load changes hit both: a training step (forward + backward, ``train_mode``, masks given) and an evaluation
forward (``eval``, no gradient). The median time per episode and the ratio released / ours are printed
(> 1 means ours is faster). Without ``--released-repo`` (or ``$IMR_HSNET_RELEASED``) only ours is timed.

The released model is imported from the given checkout with two shims and no change to its files: its
ImageNet ``torch.load`` of ``../Datasets_HSN/Pretrain/*.pth`` gets a random torchvision state dict instead
(our weights are loaded over it anyway), and ``.cuda()`` is never called.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model import build_model  # noqa: E402
from model.backbone import get_spec  # noqa: E402


def import_released(repo: Path, backbone: str) -> Callable[[], torch.nn.Module]:
    """A constructor of the released ``HypercorrSqueezeNetwork_imr`` imported as package ``released_model``."""
    folder = repo / "model"
    if not (folder / "hsnet_imr.py").is_file():
        raise FileNotFoundError(f"{folder / 'hsnet_imr.py'} not found: --released-repo must be the IMR-HSNet checkout")
    spec = importlib.machinery.ModuleSpec("released_model", None, is_package=True)
    pkg = importlib.util.module_from_spec(spec)
    pkg.__path__ = [str(folder)]
    sys.modules["released_model"] = pkg
    module = importlib.import_module("released_model.hsnet_imr")

    def construct() -> torch.nn.Module:
        real_load = torch.load

        def fake_load(path, *args, **kwargs):  # the ImageNet file: random weights (overwritten afterwards)
            if "Pretrain" in str(path):
                return get_spec(backbone).build().state_dict()
            return real_load(path, *args, **kwargs)

        torch.load = fake_load
        try:
            return module.HypercorrSqueezeNetwork_imr(backbone, False)
        finally:
            torch.load = real_load

    return construct


def make_episode(bsz: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    side = size // 8
    ep = dict(query_img=torch.randn(bsz, 3, size, size, generator=g),
              support_img=torch.randn(bsz, 3, size, size, generator=g),
              support_cam=torch.rand(bsz, side, side, generator=g),
              query_cam=torch.rand(bsz, side, side, generator=g),
              query_mask=(torch.rand(bsz, size, size, generator=g) > 0.5).float(),
              support_mask=(torch.rand(bsz, size, size, generator=g) > 0.5).float())
    return {k: v.to(device) for k, v in ep.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model: torch.nn.Module, ep: dict[str, torch.Tensor], stage: int) -> None:
    model.train_mode()
    model.zero_grad(set_to_none=True)
    # the released forward may write into the CAM tensors' clones only; pass copies to be safe
    _, _, loss = model(**{k: v.clone() for k, v in ep.items()}, stage=stage)
    loss.backward()


def eval_step(model: torch.nn.Module, ep: dict[str, torch.Tensor], stage: int) -> None:
    model.eval()
    with torch.no_grad():
        model(**{k: v.clone() for k, v in ep.items() if not k.endswith("_mask")}, stage=stage)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--released-repo", type=Path, default=os.environ.get("IMR_HSNET_RELEASED"),
                        help="checkout of the released IMR-HSNet (default: $IMR_HSNET_RELEASED)")
    parser.add_argument("--backbone", default="vgg16", choices=["vgg16", "resnet50"])
    parser.add_argument("--size", type=int, default=400, help="input side in pixels (released: 400 only)")
    parser.add_argument("--bsz", type=int, default=2, help="episodes per batch")
    parser.add_argument("--stage", type=int, default=2, help="IMR refinement steps")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: PyTorch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    models = {"ours": build_model(args.backbone, backbone_weights="none").to(device)}
    if args.released_repo is not None:
        if args.size != 400:
            parser.error("the released model hard-codes 400-pixel inputs: use --size 400 with --released-repo")
        released = import_released(Path(args.released_repo), args.backbone)()
        released.load_state_dict(models["ours"].state_dict())
        models["released"] = released.to(device)
    else:
        print("no --released-repo / $IMR_HSNET_RELEASED: timing ours only")

    ep = make_episode(args.bsz, args.size, device)
    print(f"{args.backbone}, {args.size} px, batch {args.bsz}, stage {args.stage}, device {device}, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    for name, step in (("train fwd+bwd", train_step), ("eval fwd", eval_step)):
        times: dict[str, list[float]] = {k: [] for k in models}
        for model in models.values():  # warm-up (allocator, oneDNN primitives)
            step(model, ep, args.stage)
        for _ in range(args.repeats):
            for key, model in models.items():
                times[key].append(timed(lambda: step(model, ep, args.stage), device))
        med = {k: statistics.median(v) / args.bsz for k, v in times.items()}
        line = f"{name:14s} per episode: ours {med['ours']:.3f} s"
        if "released" in med:
            line += f" | released {med['released']:.3f} s | released/ours {med['released'] / med['ours']:.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
