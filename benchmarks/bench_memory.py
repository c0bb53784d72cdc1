"""Memory and copy traffic of one training episode: ours against the released model, side by side in one run.

    python benchmarks/bench_memory.py --released-repo /path/to/IMR-HSNet                  # both backbones, stage 2
    python benchmarks/bench_memory.py --released-repo PATH --backbone resnet50 --stage 3 --repeats 5 --json out.json
    python benchmarks/bench_memory.py --device cuda --cuda-batches 1 10 20 40             # on a GPU

For one training step (forward with the loss, backward) at the released settings (400 px, batch 1 = one
episode, ``--stage`` refinement steps), with the same random weights and inputs for every model:

* **held for backward**: bytes allocated at the end of the forward pass that were not allocated before it (the
  tensors the graph saved, each storage once, plus the three small outputs), from the allocator's own count
  (``torch.profiler`` with ``profile_memory``: every allocation and free, in order). This counts whatever keeps
  memory for backward, saved tensors or recomputation recipes or checkpointed inputs alike;
* **saved tensors (hooks)**: the bytes that ``torch.autograd.graph.saved_tensors_hooks`` sees packed (each
  storage once, parameters excluded). Exact for a plain graph; it cannot see the tensors inside our
  recomputation scopes (they pack their own), so it is printed for reference only;
* **peak in backward**: the largest allocated total during ``loss.backward()``, over the same baseline;
* **copy bytes**: bytes written by ``aten::copy_`` (which ``contiguous``, ``clone``, ``reshape`` of a
  non-viewable tensor and dtype casts all end in), as recorded by the profiler with the shapes;
* **FLOPs** (``torch.utils.flop_counter``) and **CPU time** per step (median of ``--repeats`` steps, the models
  interleaved step by step so that load changes hit all of them).

The variants: ``released`` (its code imported from ``--released-repo`` as in ``bench_model.py``), ``ours``
(the defaults) and ``ours+ckpt`` (``--checkpoint-learner``). On CUDA it also reports
``torch.cuda.max_memory_allocated`` of a training step at each ``--cuda-batches`` size. The estimate "batch
40 on one GPU" is 40 x (the step's peak per episode, over the bytes allocated before it) + the trainable
parameters four times (weights, gradients, Adam's two moments) + the frozen backbone once: activations scale
with the batch, and the step's peak is reached in backward.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_model import import_released, make_episode  # noqa: E402
from common.io import atomic_write_text  # noqa: E402
from model import build_model  # noqa: E402

ITEMSIZE = {"float": 4, "c10::Half": 2, "c10::BFloat16": 2, "double": 8, "long int": 8, "int": 4, "bool": 1,
            "unsigned char": 1, "signed char": 1, "short int": 2}


def train_step(model: torch.nn.Module, ep: dict[str, torch.Tensor], stage: int,
               between: Optional[Callable[[], None]] = None, autocast: Optional[torch.dtype] = None) -> None:
    """Forward with the loss, ``between()``, backward (``train_mode``, gradients set to None first); the forward
    under ``autocast`` to that dtype when given (CPU or CUDA, as ``--amp`` does on CUDA)."""
    model.train_mode()
    model.zero_grad(set_to_none=True)
    device_type = next(model.parameters()).device.type
    with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=autocast is not None):
        out_q, out_s, loss = model(**{k: v.clone() for k, v in ep.items()}, stage=stage)
    del out_q, out_s
    if between is not None:
        between()
    with torch.profiler.record_function("backward"):
        loss.backward()


def saved_tensor_bytes(model: torch.nn.Module, ep: dict[str, torch.Tensor], stage: int,
                       top: int = 8) -> tuple[int, list[tuple[str, int, int]]]:
    """Bytes packed by saved-tensor hooks in one step (each storage once, parameters excluded) and the largest
    groups as (shape, count, bytes)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, tuple[int, tuple[int, ...]]] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params and storage.data_ptr() not in seen:
            seen[storage.data_ptr()] = (storage.nbytes(), tuple(tensor.shape))
        return tensor

    model.train_mode()
    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        _, _, loss = model(**{k: v.clone() for k, v in ep.items()}, stage=stage)
    loss.backward()
    groups: dict[tuple[int, ...], list[int]] = collections.defaultdict(lambda: [0, 0])
    for nbytes, shape in seen.values():
        groups[shape][0] += 1
        groups[shape][1] += nbytes
    largest = sorted(groups.items(), key=lambda item: -item[1][1])[:top]
    return sum(n for n, _ in seen.values()), [(str(shape), count, nbytes) for shape, (count, nbytes) in largest]


def profile_step(model: torch.nn.Module, ep: dict[str, torch.Tensor], stage: int,
                 top: int = 8, autocast: Optional[torch.dtype] = None) -> dict[str, Any]:
    """Held-for-backward bytes, backward peak and copy bytes of one step, from one profiled run."""
    from torch.profiler import ProfilerActivity, profile

    marks: dict[str, int] = {}
    activities = [ProfilerActivity.CPU]
    with profile(activities=activities, profile_memory=True, record_shapes=True) as prof:
        train_step(model, ep, stage, between=lambda: marks.setdefault("forward_end", time.perf_counter_ns()),
                   autocast=autocast)
    copies: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for event in prof.events():
        if event.name != "aten::copy_" or not event.input_shapes or not event.input_shapes[0]:
            continue
        # FunctionEvent.input_dtypes is missing in some PyTorch versions (2.11): count float32 there
        dtypes = getattr(event, "input_dtypes", None)
        dims, dtype = event.input_shapes[0], dtypes[0] if dtypes else "float"
        nbytes = ITEMSIZE.get(dtype, 4)
        for dim in dims:
            nbytes *= dim
        copies[str(tuple(dims))][0] += 1
        copies[str(tuple(dims))][1] += nbytes
    with tempfile.TemporaryDirectory() as tmp:
        trace_path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(trace_path)
        with open(trace_path) as handle:
            trace = json.load(handle)["traceEvents"]
    backward = [e for e in trace if e.get("name") == "backward" and e.get("ph") == "X"]
    memory = sorted((e for e in trace if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == 0),
                    key=lambda e: e["ts"])
    start = backward[0]["ts"] if backward else float("inf")
    before = [e["args"]["Total Allocated"] for e in memory if e["ts"] < start]
    during = [e["args"]["Total Allocated"] for e in memory if e["ts"] >= start]
    base = memory[0]["args"]["Total Allocated"] - memory[0]["args"]["Bytes"] if memory else 0
    largest = sorted(copies.items(), key=lambda item: -item[1][1])[:top]
    return {"held_for_backward": (before[-1] if before else base) - base,
            "peak_backward": (max(during) if during else base) - base,
            "peak_step": max(e["args"]["Total Allocated"] for e in memory) - base if memory else 0,
            "copy_bytes": sum(nbytes for _, nbytes in copies.values()),
            "copy_calls": sum(count for count, _ in copies.values()),
            "largest_copies": [(shape, count, nbytes) for shape, (count, nbytes) in largest]}


def count_flops(model: torch.nn.Module, ep: dict[str, torch.Tensor], stage: int) -> int:
    """FLOPs of one training step (forward + backward) as ``FlopCounterMode`` counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        train_step(model, ep, stage)
    return counter.get_total_flops()


def time_steps(models: dict[str, torch.nn.Module], ep: dict[str, torch.Tensor], stage: int,
               repeats: int) -> dict[str, float]:
    """Median seconds per step of each model, the models interleaved step by step after one warm-up each."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        train_step(model, ep, stage)
    for _ in range(repeats):
        for name, model in models.items():
            _sync(ep)
            start = time.perf_counter()
            train_step(model, ep, stage)
            _sync(ep)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


# operator groups, first match wins: a group's names are matched as parts of the operator's name (``aten::``
# dropped); then EXACT_GROUPS by the whole name (an in-place ``_`` dropped), since short names are parts of
# others (``add`` of ``addmm``, ``ge`` of ``gelu``, ``cat`` of ``scatter``). ``benchmarks/bench_profile.py``
# groups the GPU's kernel time the same way.
OP_GROUPS = (("optimizer", ("_foreach_", "_fused_adam")),
             ("convolution backward", ("convolution_backward",)),
             ("convolution forward", ("convolution", "conv2d")),  # mkldnn_, cudnn_, _convolution, ...
             ("copies", ("copy_", "clone", "contiguous")),
             ("correlation (bmm)", ("bmm",)),
             ("group norm", ("group_norm", "native_group_norm")),
             ("interpolation", ("upsample",)))
EXACT_GROUPS = {**dict.fromkeys(("add", "sub", "rsub", "mul", "div", "neg", "relu", "threshold_backward", "sigmoid",
                                 "sigmoid_backward", "tanh", "tanh_backward", "gelu", "gelu_backward", "clamp",
                                 "clamp_min", "where", "fill", "zero", "eq", "ne", "gt", "ge", "lt", "le", "exp",
                                 "sqrt", "rsqrt", "pow", "reciprocal", "masked_fill", "addcmul", "addcdiv", "lerp",
                                 "abs", "maximum", "minimum", "_softmax", "_softmax_backward_data"), "elementwise"),
                **dict.fromkeys(("cat", "_cat", "stack"), "concatenation")}


def op_group(name: str) -> str:
    """The group of a profiled operator (``aten::add_`` -> "elementwise"); "other" for the rest (reductions,
    the loss, dtype casts' allocation, autograd bookkeeping, views)."""
    name = name.removeprefix("aten::")
    group = next((title for title, names in OP_GROUPS if any(n in name for n in names)), None)
    return group or EXACT_GROUPS.get(name.removesuffix("_"), "other")


def op_seconds(model: torch.nn.Module, ep: dict[str, torch.Tensor], stage: int) -> dict[str, float]:
    """Self CPU seconds of one profiled step (after one warm-up), grouped by :func:`op_group`."""
    from torch.profiler import ProfilerActivity, profile

    train_step(model, ep, stage)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(model, ep, stage)
    groups: dict[str, float] = collections.defaultdict(float)
    for row in prof.key_averages():
        groups[op_group(row.key)] += row.self_cpu_time_total / 1e6
    return dict(groups)


def autocast_output_dtypes(model: torch.nn.Module, ep: dict[str, torch.Tensor], stage: int,
                           dtype: torch.dtype) -> dict[str, dict[str, int]]:
    """Which operators of one forward (with the loss) under autocast to ``dtype`` write float32 and which
    ``dtype`` outputs: ``{"float32": {"module: op": bytes}, "bfloat16": {...}}``, summed over calls, views left
    out (they allocate nothing). Autocast casts before the operator runs, so the dtypes seen below it are the
    ones a GPU's ``--amp`` computes and keeps."""
    from torch.utils._python_dispatch import TorchDispatchMode

    totals: dict[str, dict[str, int]] = collections.defaultdict(lambda: collections.defaultdict(int))
    names = {module: name or "model" for name, module in model.named_modules()}
    stack: list[str] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {t.untyped_storage().data_ptr() for t in torch.utils._pytree.tree_leaves((args, kwargs))
                      if isinstance(t, torch.Tensor)}
            for tensor in (out if isinstance(out, (tuple, list)) else (out,)):
                if (isinstance(tensor, torch.Tensor) and tensor.is_floating_point()
                        and tensor.untyped_storage().data_ptr() not in inputs):
                    where = f"{stack[-1] if stack else 'model'}: {func.overloadpacket.__name__}"
                    totals[str(tensor.dtype).replace("torch.", "")][where] += tensor.numel() * tensor.element_size()
            return out

    def enter(module, inputs):
        stack.append(names.get(module, type(module).__name__))

    def leave(module, inputs, output):
        stack.pop()

    hooks = [torch.nn.modules.module.register_module_forward_pre_hook(enter),
             torch.nn.modules.module.register_module_forward_hook(leave, always_call=True)]
    model.train_mode()
    device_type = next(model.parameters()).device.type
    try:
        with torch.autocast(device_type, dtype=dtype), Record():
            model(**{k: v.clone() for k, v in ep.items()}, stage=stage)
    finally:
        for hook in hooks:
            hook.remove()
    return {key: dict(sorted(ops.items(), key=lambda item: -item[1])) for key, ops in totals.items()}


def cuda_peaks(models: dict[str, torch.nn.Module], name: str, batches: list[int], stage: int,
               device: torch.device) -> dict[int, Optional[int]]:
    """``torch.cuda.max_memory_allocated`` of one training step of ``models[name]`` per batch size (None: out of
    memory), the other models moved to the CPU meanwhile so that only this one's weights count."""
    others = [other for key, other in models.items() if key != name]
    for other in others:
        other.to("cpu")
    try:
        return _cuda_peaks(models[name], batches, stage, device)
    finally:
        for other in others:
            other.to(device)


def _cuda_peaks(model: torch.nn.Module, batches: list[int], stage: int,
                device: torch.device) -> dict[int, Optional[int]]:
    peaks: dict[int, Optional[int]] = {}
    for bsz in batches:
        ep = make_episode(bsz, 400, device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            train_step(model, ep, stage)
            torch.cuda.synchronize(device)
            peaks[bsz] = torch.cuda.max_memory_allocated(device)
        except torch.OutOfMemoryError:
            peaks[bsz] = None
        del ep
        model.zero_grad(set_to_none=True)
    return peaks


def _sync(ep: dict[str, torch.Tensor]) -> None:
    device = next(iter(ep.values())).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_models(backbone: str, released_repo: Optional[Path], device: torch.device,
                 variants: list[str]) -> dict[str, torch.nn.Module]:
    """The variants with the same random weights (ours' seeded init copied into the released model)."""
    torch.manual_seed(0)
    reference = build_model(backbone, backbone_weights="none")
    models: dict[str, torch.nn.Module] = {}
    for variant in variants:
        if variant == "released":
            if released_repo is None:
                continue
            model = import_released(released_repo, backbone)()
        else:
            extra = {"checkpoint_learner": True} if variant == "ours+ckpt" else {}
            model = build_model(backbone, backbone_weights="none", **extra)
        model.load_state_dict(reference.state_dict())
        model.backbone.requires_grad_(False)
        models[variant] = model.to(device)
    return models


def _mb(nbytes: Optional[float]) -> str:
    return "OOM" if nbytes is None else f"{nbytes / 1e6:9.1f}"


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--released-repo", type=Path, default=os.environ.get("IMR_HSNET_RELEASED"),
                        help="checkout of the released IMR-HSNet (default: $IMR_HSNET_RELEASED)")
    parser.add_argument("--backbone", nargs="+", default=["resnet50", "vgg16"], choices=["vgg16", "resnet50"])
    parser.add_argument("--stage", nargs="+", type=int, default=[2], help="refinement steps (PASCAL 2, COCO 3)")
    parser.add_argument("--variants", nargs="+", default=["released", "ours", "ours+ckpt"],
                        choices=["released", "ours", "ours+ckpt"])
    parser.add_argument("--measure", nargs="*", default=["memory", "flops", "time"],
                        choices=["memory", "hooks", "flops", "time", "ops", "dtypes"],
                        help="what to measure (hooks: the saved-tensor-hook count, for reference; ops: self CPU "
                             "seconds by operator group; dtypes: with --autocast, the output bytes of each "
                             "operator of the forward that stay float32 and that autocast lowers)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per model (median reported)")
    parser.add_argument("--size", type=int, default=400, help="image side (released: 400; the released model "
                                                                 "runs at 400 only; smaller: a quick check)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--cuda-batches", nargs="*", type=int, default=[1, 10, 20, 40])
    parser.add_argument("--cudnn-deterministic", choices=["off", "on", "both"], default="off",
                        help="CUDA: the steps' cuDNN algorithms (on: the deterministic ones, as the training loop "
                             "uses them; both: a peak for each, to see what they cost)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: PyTorch's default)")
    parser.add_argument("--autocast", choices=["bf16", "fp16"], default=None,
                        help="also measure each variant's memory with the forward under autocast to this dtype "
                             "(bf16 works on a CPU: what --amp bf16 keeps, measured without a GPU)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    released_repo = Path(args.released_repo).resolve() if args.released_repo else None
    if released_repo is None:
        print("no --released-repo / $IMR_HSNET_RELEASED: ours only")
    print(f"{args.size} px, batch 1 (one episode), device {device}, threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}", flush=True)

    results: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads(),
                               "torch": torch.__version__, "runs": []}
    for backbone in args.backbone:
        models = build_models(backbone, released_repo, device, args.variants)
        reference = next(iter(models.values()))
        param_bytes = sum(p.numel() * p.element_size() for p in reference.parameters() if p.requires_grad)
        frozen_bytes = sum(p.numel() * p.element_size() for p in reference.parameters() if not p.requires_grad)
        ep = make_episode(1, args.size, device)
        for stage in args.stage:
            rows: dict[str, dict[str, Any]] = {name: {} for name in models}
            for name, model in list(models.items()):
                if "memory" in args.measure:
                    rows[name].update(profile_step(model, ep, stage))
                    if args.autocast:
                        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.autocast]
                        rows[f"{name} {args.autocast}"] = profile_step(model, ep, stage, autocast=dtype)
                if "hooks" in args.measure:
                    rows[name]["saved_hooks"], rows[name]["largest_saved"] = saved_tensor_bytes(model, ep, stage)
                if "flops" in args.measure:
                    rows[name]["flops"] = count_flops(model, ep, stage)
                if "ops" in args.measure:
                    rows[name]["op_seconds"] = op_seconds(model, ep, stage)
                if "dtypes" in args.measure and args.autocast:
                    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.autocast]
                    rows[name]["autocast_dtypes"] = found = autocast_output_dtypes(model, ep, stage, dtype)
                    _print_dtypes(f"{backbone} stage {stage} {name}", found)
                print(f"  measured {backbone} stage {stage} {name}", flush=True)
            if "time" in args.measure:
                for name, seconds in time_steps(models, ep, stage, args.repeats).items():
                    rows[name]["seconds"] = seconds
            if device.type == "cuda" and args.cuda_batches:
                for deterministic in {"off": [False], "on": [True], "both": [False, True]}[args.cudnn_deterministic]:
                    # the training loop runs with cuDNN's deterministic algorithms (fix_randseed, as released)
                    torch.backends.cudnn.deterministic = deterministic
                    key = "cuda_max_allocated" + ("_deterministic" if deterministic else "")
                    for name in models:
                        rows[name][key] = cuda_peaks(models, name, args.cuda_batches, stage, device)
                torch.backends.cudnn.deterministic = False
            for row in rows.values():
                if "peak_step" in row:
                    row["batch40_estimate"] = 40 * row["peak_step"] + 4 * param_bytes + frozen_bytes
            _print_table(backbone, stage, rows)
            results["runs"].append({"backbone": backbone, "stage": stage, "load_average": os.getloadavg()[0],
                                    "trainable_param_bytes": param_bytes, "frozen_param_bytes": frozen_bytes,
                                    "models": rows})
            # one line per configuration as it ends: a run stopped later keeps what it finished
            print("RESULT " + json.dumps({"bench": "memory", "device": str(device), "size": args.size,
                                          **results["runs"][-1]}, default=str), flush=True)
    if args.json is not None:
        atomic_write_text(json.dumps(results, indent=1), args.json)
        print(f"wrote {args.json}")
    return results


def _print_dtypes(title: str, found: dict[str, dict[str, int]]) -> None:
    print(f"\n{title}: forward output bytes by dtype under autocast (operators, largest first)")
    for dtype, ops in found.items():
        listed = ", ".join(f"{op} {_mb(size).strip()}" for op, size in list(ops.items())[:12])
        print(f"  {dtype:9s} {_mb(sum(ops.values()))} MB in all: {listed}")


def _print_table(backbone: str, stage: int, rows: dict[str, dict[str, Any]]) -> None:
    reference = rows.get("released", {})
    print(f"\n{backbone}, stage {stage} (MB per episode; x = ours / released)")
    columns = [("held_for_backward", "held for bwd"), ("peak_step", "step peak"), ("copy_bytes", "copy"),
               ("saved_hooks", "saved (hooks)"), ("flops", "GFLOP"), ("seconds", "s / step")]
    header = f"{'':14s}" + "".join(f"{title:>22s}" for key, title in columns if any(key in r for r in rows.values()))
    print(header)
    for name, row in rows.items():
        line = f"{name:14s}"
        for key, _ in columns:
            if not any(key in r for r in rows.values()):
                continue
            value = row.get(key)
            text = "" if value is None else (f"{value / 1e9:9.1f}" if key == "flops" else
                                             f"{value:9.2f}" if key == "seconds" else _mb(value))
            if value is not None and reference.get(key) and name != "released":
                text += f" ({value / reference[key]:.2f}x)"
            line += f"{text:>22s}"
        print(line)
    for name, row in rows.items():
        if "batch40_estimate" in row:
            print(f"  {name}: batch 40 on one GPU needs about {row['batch40_estimate'] / 1e9:.1f} GB "
                  "(40 x the step's peak + weights, gradients, Adam moments, frozen backbone)")
        for key, what in (("cuda_max_allocated", ""), ("cuda_max_allocated_deterministic", " (deterministic cuDNN)")):
            if key in row:
                print(f"  {name}: cuda max allocated{what} " + ", ".join(
                    f"batch {b}: {_mb(v)} MB" for b, v in row[key].items()))
        if "op_seconds" in row:
            base = reference.get("op_seconds", {})
            print(f"  {name} self CPU seconds by operator group: " + "; ".join(
                f"{group} {seconds:.2f}" + (f" ({seconds / base[group]:.2f}x)" if base.get(group) and
                                             name != "released" else "")
                for group, seconds in sorted(row["op_seconds"].items(), key=lambda item: -item[1])))
        if "largest_copies" in row:
            print(f"  {name} largest copies: " + "; ".join(f"{count} x {shape} {nbytes / 1e6:.0f} MB"
                                                         for shape, count, nbytes in row["largest_copies"][:5]))
        if "largest_saved" in row:
            print(f"  {name} largest saved: " + "; ".join(f"{count} x {shape} {nbytes / 1e6:.0f} MB"
                                                        for shape, count, nbytes in row["largest_saved"][:5]))
    print(flush=True)


if __name__ == "__main__":
    main()
