"""The speed floor of training: FLOPs of one training episode over the card's measured matmul rate.

    python benchmarks/bench_floor.py --device cuda --backbone resnet50      # on a GPU: FLOPs, rates, floor
    python benchmarks/bench_floor.py --device cpu --profile                   # CPU: FLOPs and where time goes

* FLOPs: one training step (1-shot forward with the loss, backward) at the released settings (400 px, stage 2)
  counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; the frozen backbone's
  forward included, its backward not, as in training), divided by the batch size.
* Rate: large square matmuls timed on the device in float32 (TF32 off, the released numerics), TF32 and
  bfloat16 (GPU only), the best of a few repeats.
* Floor: rate / FLOPs = episodes per second no implementation can beat on that card at that precision; the
  measured throughput (``bench_train_test.py``) is compared with it in ``benchmarks/NOTES.md``.
* ``--profile``: the operators taking the most time in one step (torch.profiler), to see where to look.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from common.device import configure_tf32, resolve_device  # noqa: E402
from engine.loops import forward_1shot  # noqa: E402
from model import build_model  # noqa: E402


def training_batch(bsz: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random inputs of a 1-shot training batch (the released batch dict's tensors)."""
    generator = torch.Generator().manual_seed(0)
    side = size // 8
    batch = {"query_img": torch.randn(bsz, 3, size, size, generator=generator),
             "support_imgs": torch.randn(bsz, 1, 3, size, size, generator=generator),
             "query_cam": torch.rand(bsz, side, side, generator=generator),
             "support_cams": torch.rand(bsz, 1, side, side, generator=generator),
             "query_mask": (torch.rand(bsz, size, size, generator=generator) > 0.5).float(),
             "support_masks": (torch.rand(bsz, 1, size, size, generator=generator) > 0.5).float()}
    return {key: value.to(device) for key, value in batch.items()}


def step(model: torch.nn.Module, batch: dict[str, torch.Tensor], stage: int) -> None:
    """One training step's computation: forward with the loss, backward."""
    model.zero_grad(set_to_none=True)
    _, loss = forward_1shot(model, batch, stage)
    loss.backward()


def count_flops(model: torch.nn.Module, batch: dict[str, torch.Tensor], stage: int) -> int:
    """FLOPs of one training step (forward + backward), as FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(model, batch, stage)
    return counter.get_total_flops()


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Best measured FLOP/s of an (n, n) @ (n, n) matmul."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="resnet50", choices=["vgg16", "resnet50"])
    parser.add_argument("--size", type=int, default=400, help="input side (released: 400)")
    parser.add_argument("--bsz", type=int, default=2, help="episodes per step (FLOPs are reported per episode)")
    parser.add_argument("--stage", type=int, default=2)
    parser.add_argument("--matmul-size", type=int, default=0, help="default: 8192 on a GPU, 2048 on a CPU")
    parser.add_argument("--profile", action="store_true", help="print the operators that take the most time")
    args = parser.parse_args()

    device = resolve_device(args.device)
    configure_tf32(False)
    torch.manual_seed(0)
    model = build_model(args.backbone, backbone_weights=None).to(device)
    model.backbone.requires_grad_(False)
    model.train_mode()
    batch = training_batch(args.bsz, args.size, device)
    flops = count_flops(model, batch, args.stage) / args.bsz
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{args.backbone}, {args.size} px, stage {args.stage}, device {device} ({name}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"training FLOPs per episode (forward + backward): {flops / 1e9:.1f} GFLOP")

    n = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    rates = {"fp32": matmul_rate(device, torch.float32, n)}
    if device.type == "cuda":
        configure_tf32(True)
        rates["tf32"] = matmul_rate(device, torch.float32, n)
        configure_tf32(False)
        rates["bf16"] = matmul_rate(device, torch.bfloat16, n)
    for precision, rate in rates.items():
        print(f"matmul {n}x{n} {precision}: {rate / 1e12:.2f} TFLOP/s -> floor {rate / flops:.2f} training "
              "episodes/s")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        step(model, batch, args.stage)  # warm-up
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            step(model, batch, args.stage)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=40))


if __name__ == "__main__":
    main()
