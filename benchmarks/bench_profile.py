"""Where one training step's time goes: the top kernels and the time by operator group, fp32 and bf16.

    python benchmarks/bench_profile.py --device cuda --out profile.tsv        # ResNet50, 400 px, batch 20, stage 2
    python benchmarks/bench_profile.py --device cpu --size 400 --bsz 2        # the CPU: operators, self CPU time

One training step as the loop runs it (``fix_randseed`` as released, so cuDNN runs deterministic; TF32 off;
forward with the loss under ``--amp``'s autocast and channels_last for bf16, backward, Adam's step), after
``--warmup`` steps (cuDNN's algorithm choice, Adam's state), profiled with ``torch.profiler``:

* on CUDA: every kernel's device time. The top ``--top`` kernels by device time with their share of the step's
  kernel time; and the kernel time by operator group, each kernel counted for the operator that launched it
  (its self device time) and grouped as ``bench_memory.py --measure ops`` groups (:func:`op_group`), except
  that everything under the frozen backbone's forward is "backbone" and everything under ``optimizer.step()``
  is "optimizer". Also the step's wall time, so that kernel time / wall time says how busy the GPU was (the
  rest: launch gaps, host work, synchronisation);
* on the CPU: the same with operators for kernels and self CPU time for device time (bf16 is skipped there:
  ``--amp`` autocasts on CUDA only).

Writes ``--out`` (tab-separated: precision, kind, name, ms, share, calls; kind is ``step``, ``group`` or
``kernel``) and one ``RESULT {json}`` line per precision.

``--traffic`` measures instead the bytes each operator group reads and writes in the step (any device; every
operator below autograd as a ``TorchDispatchMode`` sees it, its tensor inputs read once and its outputs written
once, views free): divided by a card's memory bandwidth, the least time a memory-bound group can take there.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_floor import training_batch  # noqa: E402
from benchmarks.bench_memory import op_group  # noqa: E402
from common.device import configure_tf32, resolve_device  # noqa: E402
from common.seed import fix_randseed  # noqa: E402
from engine.loops import autocast, forward_1shot  # noqa: E402
from model import build_model  # noqa: E402

RANGES = {"backbone": "backbone", "optimizer": "optimizer"}  # record_function name -> group of all under it
_ACTIVE: list[str] = []  # the ranges the step is in now (for --traffic, which sees no record_function)


def build_step(backbone: str, precision: str, bsz: int, size: int, stage: int,
               device: torch.device) -> Callable[[], None]:
    """One training step of a fresh seeded model (random weights), as ``engine.loops.train_epoch`` runs it,
    with the frozen backbone's forward and the optimizer step in named ``record_function`` ranges."""
    from torch.profiler import record_function

    fix_randseed(0)
    model = build_model(backbone, backbone_weights=None).to(device)
    model.backbone.requires_grad_(False)
    amp = precision if precision != "fp32" else None
    if amp:
        model.use_channels_last()
    model.train_mode()
    extract = model.extract_features

    def extract_features(img: torch.Tensor) -> list[torch.Tensor]:
        with record_function("backbone"), _active("backbone"):
            return extract(img)

    model.extract_features = extract_features  # an instance attribute: the forward calls this one
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=4e-4)
    batch = training_batch(bsz, size, device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            _, loss = forward_1shot(model, batch, stage)
        if not bool(torch.isfinite(loss.detach()).all()):  # the loop's check, a host sync between the passes
            raise RuntimeError("non-finite loss")
        loss.backward()
        with record_function("optimizer"), _active("optimizer"):
            optimizer.step()

    return step


class _active:
    """Marks the step's ``RANGES`` for :func:`traffic` (a TorchDispatchMode sees no ``record_function``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        _ACTIVE.append(self.name)

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE.pop()


def traffic(step: Callable[[], None]) -> dict[str, float]:
    """Bytes read and written per operator group in one ``step()``: each operator's tensor inputs once and its
    outputs once (``copy_``: its source and destination; a view or an ``empty``: nothing), grouped as the
    profile groups kernel time. A lower bound of the memory traffic (a convolution's workspace, GroupNorm's
    second pass over its input and caches are not seen)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    def tensors(tree: Any) -> list[torch.Tensor]:
        return [leaf for leaf in tree_leaves(tree) if isinstance(leaf, torch.Tensor)]

    def nbytes(items: list[torch.Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in items)

    groups: dict[str, float] = collections.defaultdict(float)

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            name = func._schema.name
            inputs, outputs = tensors((args, kwargs)), tensors(out)
            storages = {t.untyped_storage().data_ptr() for t in inputs}
            mutable = func._schema.is_mutable
            if func.is_view or name.startswith("aten::empty") or (
                    outputs and not mutable and all(t.untyped_storage().data_ptr() in storages for t in outputs)):
                return out
            moved = nbytes(inputs[1:] + outputs) if name == "aten::copy_" else nbytes(inputs + outputs)
            groups[RANGES.get(_ACTIVE[-1]) if _ACTIVE else op_group(name)] += moved
            return out

    with Count():
        step()
    return dict(sorted(groups.items(), key=lambda item: -item[1]))


def _self_device_us(event: Any) -> float:
    value = getattr(event, "self_device_time_total", None)
    return value if value is not None else event.self_cuda_time_total  # older PyTorch


def _range_group(event: Any) -> Optional[str]:
    while event is not None:
        if event.name in RANGES:
            return RANGES[event.name]
        event = event.cpu_parent
    return None


def profile_step(step: Callable[[], None], device: torch.device, warmup: int, top: int) -> dict[str, Any]:
    """Profile one ``step()`` after ``warmup`` ones: wall ms, total ms (kernels or self CPU), groups, top names."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize(device)
        wall_us = (time.perf_counter() - start) * 1e6
    events = prof.events()
    groups: dict[str, float] = collections.defaultdict(float)
    names: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for event in events:
        if event.device_type == DeviceType.CPU:
            spent = _self_device_us(event) if cuda else event.self_cpu_time_total
            if spent > 0:
                groups[_range_group(event) or op_group(event.name)] += spent
                if not cuda:
                    names[event.name][0] += spent
                    names[event.name][1] += 1
        elif cuda:  # a kernel, memcpy or memset on the device
            names[event.name][0] += event.device_time_total
            names[event.name][1] += 1
    total = sum(spent for spent, _ in names.values())
    unattributed = total - sum(groups.values())
    if unattributed > 1e-3 * total:  # device work no operator launched (or the profiler lost the link)
        groups["(no operator)"] += unattributed
    largest = sorted(names.items(), key=lambda item: -item[1][0])[:top]
    return {"wall_ms": wall_us / 1e3, "total_ms": total / 1e3, "count": int(sum(n for _, n in names.values())),
            "groups": {name: spent / 1e3 for name, spent in sorted(groups.items(), key=lambda item: -item[1])},
            "top": [(name, spent / 1e3, int(calls)) for name, (spent, calls) in largest]}


def tsv_rows(precision: str, result: dict[str, Any], cuda: bool) -> list[str]:
    """The result as rows of ``--out``: precision, kind, name, ms, share (of the kernel total), calls."""
    total = result["total_ms"] or 1.0
    what = "kernel time" if cuda else "self CPU time"
    rows = [f"{precision}\tstep\twall\t{result['wall_ms']:.3f}\t\t1",
            f"{precision}\tstep\t{what}\t{result['total_ms']:.3f}\t{result['total_ms'] / (result['wall_ms'] or 1):.4f}"
            f"\t{result['count']}"]
    rows += [f"{precision}\tgroup\t{name}\t{ms:.3f}\t{ms / total:.4f}\t" for name, ms in result["groups"].items()]
    rows += [f"{precision}\tkernel\t{' '.join(name.split())[:200]}\t{ms:.3f}\t{ms / total:.4f}\t{calls}"
             for name, ms, calls in result["top"]]
    return rows


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="resnet50", choices=["vgg16", "resnet50"])
    parser.add_argument("--size", type=int, default=400, help="image side (released: 400)")
    parser.add_argument("--bsz", type=int, default=20, help="episodes per step (the GPU runs' batch)")
    parser.add_argument("--stage", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"],
                        help="fp32 (TF32 off) and/or --amp's autocast dtype (CUDA only)")
    parser.add_argument("--warmup", type=int, default=2, help="steps before the profiled one")
    parser.add_argument("--top", type=int, default=30, help="kernels (operators on the CPU) listed")
    parser.add_argument("--out", type=Path, default=None, help="write the table here (tab-separated)")
    parser.add_argument("--traffic", action="store_true",
                        help="bytes read and written per operator group instead of the profile")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    configure_tf32(False)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    header = (f"# bench_profile: {args.backbone}, {args.size} px, batch {args.bsz}, stage {args.stage}, "
              f"{device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(header, flush=True)
    rows = [header, "precision\tkind\tname\tms\tshare\tcalls"]
    for precision in args.precision:
        record: dict[str, Any] = {"bench": "profile", "device": str(device), "backbone": args.backbone,
                                  "size": args.size, "bsz": args.bsz, "stage": args.stage, "precision": precision}
        if precision != "fp32" and not cuda:
            print("RESULT " + json.dumps({**record, "skipped": "autocast runs on CUDA only"}), flush=True)
            continue
        step = build_step(args.backbone, precision, args.bsz, args.size, args.stage, device)
        if args.traffic:
            for _ in range(args.warmup):
                step()
            moved = traffic(step)
            total = sum(moved.values())
            print(f"{precision}: {total / 1e9:.2f} GB read and written in the step ({total / 1e9 / args.bsz:.2f} GB "
                  "an episode)", flush=True)
            for group, count in moved.items():
                print(f"  {group:22s} {count / 1e9 / args.bsz:8.3f} GB an episode {100 * count / total:5.1f}%")
            print("RESULT " + json.dumps({**record, "bench": "traffic", "bytes": moved}), flush=True)
            continue
        result = profile_step(step, device, args.warmup, args.top)
        del step
        if cuda:
            torch.cuda.empty_cache()
        rows += tsv_rows(precision, result, cuda)
        if args.out is not None:  # after each precision: a run cut off keeps what it finished
            args.out.write_text("\n".join(rows) + "\n")
        print(f"{precision}: step {result['wall_ms']:.1f} ms wall, {result['total_ms']:.1f} ms "
              f"{'kernel' if cuda else 'self CPU'} time in {result['count']} "
              f"{'kernels' if cuda else 'operator calls'}", flush=True)
        for group, ms in result["groups"].items():
            print(f"  {group:22s} {ms:10.2f} ms {100 * ms / (result['total_ms'] or 1):5.1f}%")
        print("RESULT " + json.dumps({**record, **{k: v for k, v in result.items() if k != "top"},
                                      "top5": result["top"][:5]}), flush=True)


if __name__ == "__main__":
    main()
