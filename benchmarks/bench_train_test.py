"""Training and test throughput (episodes/s): this repository vs. the released IMR-HSNet, in the same run.

    python benchmarks/bench_train_test.py                                   # ours only
    python benchmarks/bench_train_test.py --released-repo /path/to/IMR-HSNet [--amp] [--device cuda]
    python benchmarks/bench_train_test.py --device cuda --variants fp32 amp amp-bf16 ckpt compile --json out.jsonl

``--variants``: ours in float32 (``fp32``, TF32 off), ``amp`` (float16 autocast + GradScaler, channels_last),
``amp-bf16`` (bfloat16 autocast), ``ckpt`` (``--checkpoint-learner``), ``compile`` (``--compile``; its
compilation happens in the warm-up batch, outside the timing), ``amp-bf16-compile`` (``--amp bf16
--compile``); the AMP variants need CUDA and are reported as skipped elsewhere. Each variant is a fresh model
from the same seed. On CUDA each result also has the peak memory (``torch.cuda.max_memory_allocated``) of its
training batches. Every result is printed as one ``RESULT {json}`` line and appended to ``--json`` (JSON
lines), so a run cut off keeps what it finished.

Both sides run on the same synthetic PASCAL benchmark (made in a temporary folder unless --datapath is given)
with the same random CAM files, 400 px images (the released model only runs at 400 px), the same backbone
(random weights) and batch size. Timing covers data loading, forward, backward and the optimizer step
(training) or the n-shot prediction and scoring (test), after one warm-up batch. The released code runs in a
child process (its packages are named like ours) with shims only: ``.cuda()`` is a no-op on the CPU,
``torch.histc`` gets float input, and its ImageNet backbone file is replaced by random weights.
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Optional

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def write_cams(datapath: Path, out: Path, side: int = 50, seed: int = 0) -> tuple[Path, Path]:
    """Random CAMs ``{name}--{class}.pt`` for every PASCAL (image, class) pair of the split lists."""
    generator = torch.Generator().manual_seed(seed)
    roots = {"trn": out / "CAM_Train", "val": out / "CAM_Val"}
    for split, root in roots.items():
        root.mkdir(parents=True, exist_ok=True)
        for fold_file in sorted((datapath / "splits" / "pascal" / split).glob("fold*.txt")):
            for line in fold_file.read_text().split():
                name, cc = line.split("__")
                path = root / f"{name}--{int(cc) - 1}.pt"
                if not path.exists():
                    torch.save(torch.rand(side, side, generator=generator), path)
    return roots["trn"], roots["val"]


class Batches:
    """One loader's batches, its workers started once: ``take(n)`` is the next ``n`` batches with ``len`` and
    ``dataset`` (what both loops read), so the warm-up starts the workers and the timed batches do not."""

    def __init__(self, loader) -> None:
        self.loader, self.dataset, self._iterator = loader, loader.dataset, iter(loader)

    def take(self, n: int) -> "Batches._Slice":
        return Batches._Slice(self, n)

    def _next(self):
        try:
            return next(self._iterator)
        except StopIteration:  # a small (synthetic) split: start another pass
            self._iterator = iter(self.loader)
            return next(self._iterator)

    class _Slice:
        def __init__(self, batches: "Batches", n: int) -> None:
            self.batches, self.n, self.dataset = batches, n, batches.dataset

        def __len__(self) -> int:
            return self.n

        def __iter__(self):
            for _ in range(self.n):
                yield self.batches._next()


VARIANTS = ("fp32", "amp", "amp-bf16", "ckpt", "compile", "amp-bf16-compile")
CUDA_ONLY = {"amp": "fp16", "amp-bf16": "bf16", "amp-bf16-compile": "bf16"}


def bench_ours(opts, traincam: Path, valcam: Path, variant: str = "fp32",
               micro_bsz: Optional[int] = None) -> dict[str, float]:
    """Training and test episodes/s of our loops with ``variant`` (see ``VARIANTS``), each training batch as
    passes of ``micro_bsz`` episodes when given (``train.py --micro-bsz``)."""
    from common.device import configure_tf32, resolve_device
    from engine.loops import test_pass, train_epoch
    from common.evaluation import IoUMeter
    from common.seed import fix_randseed
    from data.dataset import build_dataloader, build_dataset
    from model import build_model

    device = resolve_device(opts.device)
    configure_tf32(False)  # the released numerics; TF32 is its own flag
    fix_randseed(0)
    amp = CUDA_ONLY.get(variant) if device.type == "cuda" else None
    if opts.amp and variant == "fp32":  # the old spelling: --amp alone
        amp = "fp16" if device.type == "cuda" else None
    model = build_model(opts.backbone, backbone_weights=None, checkpoint_learner=variant == "ckpt").to(device)
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    if amp:
        model.use_channels_last()
    if variant in ("compile", "amp-bf16-compile"):
        model.compile_learner()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=4e-4)
    common = dict(datapath=str(opts.datapath), fold=0, img_size=opts.img_size, cam_train_path=str(traincam),
                  cam_val_path=str(valcam), splitpath=str(opts.datapath / "splits"), nepisodes=1000, seed=0)
    trn = build_dataset("pascal", split="trn", shot=1, **common)
    tst = build_dataset("pascal", split="test", shot=opts.nshot, **common)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    train_batches = Batches(build_dataloader(trn, bsz=opts.bsz, nworker=opts.nworker, shuffle=True, seed=0))
    test_batches = Batches(build_dataloader(tst, bsz=opts.bsz, nworker=0, shuffle=False, seed=0))

    def run_train(steps: int) -> None:
        train_epoch(model, train_batches.take(steps), optimizer, IoUMeter.for_dataset(trn, device), epoch=0,
                    stage=2, device=device, amp=amp or False, scaler=scaler, micro_bsz=micro_bsz, log_every=0,
                    progress=False)

    def run_test(steps: int) -> None:
        test_pass(model, test_batches.take(steps), IoUMeter.for_dataset(tst, device), nshot=opts.nshot, stage=2,
                  device=device, amp=amp or False, log_every=0, progress=False)

    return _time_both(run_train, None if micro_bsz else run_test, opts, device)  # micro-batches: training only


def _time_both(run_train, run_test, opts, device) -> dict[str, float]:
    """Episodes/s after a warm-up batch; on CUDA also, for the training loop: the warm-up (first) step's peak,
    the loop's peak, what stays allocated after it (weights, gradients, Adam's moments, ...) and the most the
    caching allocator reserved, in GiB: where the loop's memory over a single step goes."""
    cuda = device.type == "cuda"
    gib = 2**30
    result: dict[str, float] = {}

    def timed(fn, steps, first_peak_key=None):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        fn(1)  # warm-up
        if cuda:
            torch.cuda.synchronize()
            if first_peak_key:
                result[first_peak_key] = torch.cuda.max_memory_allocated() / gib
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        fn(steps)
        if cuda:
            torch.cuda.synchronize()
        return steps * opts.bsz / (time.perf_counter() - start)

    result["train_eps"] = timed(run_train, opts.train_batches, "train_first_step_peak_gib")
    if cuda:
        result["train_peak_gib"] = torch.cuda.max_memory_allocated() / gib
        result["train_held_after_gib"] = torch.cuda.memory_allocated() / gib
        result["train_reserved_peak_gib"] = torch.cuda.max_memory_reserved() / gib
    if opts.test_batches > 0 and run_test is not None:
        result["test_eps"] = timed(run_test, opts.test_batches)
    return result


RELEASED_CHILD = textwrap.dedent('''
    import json, os, sys, time
    opts = json.loads(sys.argv[1])
    sys.path.insert(0, opts["released_repo"])
    import importlib.util, types
    for name in ("common", "data", "model"):  # the released packages, never ours (same names)
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(opts["released_repo"], name), os.path.join(os.getcwd(), name)]
        sys.modules[name] = pkg
    def load_script(name):
        spec = importlib.util.spec_from_file_location("released_" + name, os.path.join(opts["released_repo"], name + ".py"))
        module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); return module
    import torch, torchvision
    cuda = opts["device"] != "cpu" and torch.cuda.is_available()
    if cuda:  # PyTorch 1.5, which the released code ran on, had no TF32; ours' fp32 runs without it too
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    if not cuda:  # shims: no GPU here
        torch.Tensor.cuda = lambda self, *a, **k: self
        torch.nn.Module.cuda = lambda self, *a, **k: self
    _histc, _load = torch.histc, torch.load
    torch.histc = lambda x, *a, **k: _histc(x.float(), *a, **k)
    def load(path, *a, **k):
        if "Pretrain" in str(path):  # random backbone weights instead of the ImageNet files
            return (torchvision.models.vgg16() if "vgg16" in str(path) else torchvision.models.resnet50()).state_dict()
        return _load(path, *a, map_location="cpu", **{x: y for x, y in k.items() if x != "map_location"})
    torch.load = load
    import torch.nn as nn
    from common import utils
    from common.evaluation import Evaluator
    from data.dataset import FSSDataset
    from model.hsnet_imr import HypercorrSqueezeNetwork_imr
    rtrain, rtest = load_script("train"), load_script("test")
    rtest.Visualizer.initialize(False)
    if not cuda:
        utils.to_cuda = lambda batch: batch
        rtrain.utils.to_cuda = rtest.utils.to_cuda = utils.to_cuda
    class Batches:  # one loader, its workers started once (as ours): take(n) is the next n batches
        def __init__(self, loader): self.loader, self.dataset, self.it = loader, loader.dataset, iter(loader)
        def next(self):
            try: return next(self.it)
            except StopIteration: self.it = iter(self.loader); return next(self.it)
        def take(self, n):
            outer = self
            class Slice:
                dataset = outer.dataset
                def __len__(self): return n
                def __iter__(self): return (outer.next() for _ in range(n))
            return Slice()
    utils.fix_randseed(0)
    model = nn.DataParallel(HypercorrSqueezeNetwork_imr(opts["backbone"], False))
    model = model.to("cuda" if cuda else "cpu")
    optimizer = torch.optim.Adam([{"params": model.parameters(), "lr": 4e-4}])
    Evaluator.initialize()
    FSSDataset.initialize(img_size=400, datapath=opts["datapath"], use_original_imgsize=False)
    cams = dict(cam_train_path=opts["traincam"] + "/", cam_val_path=opts["valcam"] + "/")
    def sync():
        if cuda: torch.cuda.synchronize()
    train_batches = Batches(FSSDataset.build_dataloader("pascal", opts["bsz"], opts["nworker"], 0, "trn", **cams))
    test_batches = Batches(FSSDataset.build_dataloader("pascal", opts["bsz"], 0, 0, "test", opts["nshot"], **cams))
    def run_train(n):
        rtrain.train(0, model, train_batches.take(n), optimizer, training=True, stage=2)
    def run_test(n):
        with torch.no_grad():
            rtest.test(model, test_batches.take(n), opts["nshot"], 2)
    out = {}
    for key, fn, n in (("train_eps", run_train, opts["train_batches"]), ("test_eps", run_test, opts["test_batches"])):
        if n == 0: continue
        fn(1); sync()
        if cuda: torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter(); fn(n); sync()
        out[key] = n * opts["bsz"] / (time.perf_counter() - t)
        if cuda and key == "train_eps": out["train_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print("RESULT " + json.dumps(out))
''')


def bench_released(opts, traincam: Path, valcam: Path) -> dict[str, float]:
    """Run the released train()/test() loops in a child process whose CWD holds ``data/splits`` -> ours."""
    with tempfile.TemporaryDirectory() as cwd:
        (Path(cwd) / "data").mkdir()
        (Path(cwd) / "data" / "splits").symlink_to(opts.datapath / "splits")
        payload = {"released_repo": str(opts.released_repo), "datapath": str(opts.datapath),
                   "traincam": str(traincam), "valcam": str(valcam), "backbone": opts.backbone, "bsz": opts.bsz,
                   "nworker": opts.nworker, "nshot": opts.nshot, "device": opts.device,
                   "train_batches": opts.train_batches, "test_batches": opts.test_batches}
        proc = subprocess.run([sys.executable, "-c", RELEASED_CHILD, json.dumps(payload)], cwd=cwd,
                              capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"released run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datapath", type=Path, default=None, help="synthetic/real root (default: make one)")
    parser.add_argument("--released-repo", type=lambda text: Path(text).resolve(), default=None,
                        help="checkout of the released IMR-HSNet")
    parser.add_argument("--backbone", default="vgg16", choices=["vgg16", "resnet50"])
    parser.add_argument("--bsz", type=int, default=2)
    parser.add_argument("--nshot", type=int, default=1)
    parser.add_argument("--nworker", type=int, default=0)
    parser.add_argument("--train-batches", type=int, default=3)
    parser.add_argument("--test-batches", type=int, default=3, help="0: time training only")
    parser.add_argument("--img-size", type=int, default=400)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="ours with --amp (CUDA only); same as --variants amp")
    parser.add_argument("--variants", nargs="+", default=["fp32"], choices=VARIANTS, help="ours: which settings")
    parser.add_argument("--micro-bsz", nargs="+", type=int, default=[0], metavar="M",
                        help="ours: each variant with its training batches as passes of M episodes (train.py "
                             "--micro-bsz); 0: the whole batch. Reported against the variant's whole batch")
    parser.add_argument("--no-released", action="store_true", help="skip the released code even if given")
    parser.add_argument("--json", type=Path, default=None, help="append every result here (JSON lines)")
    opts = parser.parse_args(argv)
    from common.device import resolve_device

    torch.set_num_threads(max(1, torch.get_num_threads()))
    setting = {"device": opts.device, "backbone": opts.backbone, "bsz": opts.bsz, "nshot": opts.nshot,
               "img": opts.img_size, "train_batches": opts.train_batches, "test_batches": opts.test_batches}
    print(" ".join(f"{key}={value}" for key, value in setting.items()))

    def emit(name: str, result: dict) -> None:
        record = {"bench": "train_test", "variant": name, **setting, **result}
        print("RESULT " + json.dumps(record), flush=True)
        if opts.json is not None:
            with open(opts.json, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        if name.startswith("ratio_"):
            return
        if "skipped" in result:
            print(f"{name:9s}: skipped ({result['skipped']})", flush=True)
            return
        peak = f" | train peak {result['train_peak_gib']:.2f} GiB" if "train_peak_gib" in result else ""
        test = f" | test {result['test_eps']:.3f} episodes/s" if "test_eps" in result else ""
        print(f"{name:9s}: train {result['train_eps']:.3f} episodes/s{test}{peak}", flush=True)

    variants = ["amp"] if opts.amp and opts.variants == ["fp32"] else list(dict.fromkeys(opts.variants))
    with tempfile.TemporaryDirectory() as tmp:
        if opts.datapath is None:
            from data.synthetic import make_benchmark

            opts.datapath = Path(tmp) / "synthetic"
            make_benchmark(opts.datapath, seed=0, benchmarks=("pascal",))
        opts.datapath = opts.datapath.resolve()
        traincam, valcam = write_cams(opts.datapath, Path(tmp) / "cams", side=opts.img_size // 8)
        results = {}
        if opts.released_repo is not None and not opts.no_released:
            if opts.img_size != 400:
                emit("released", {"skipped": "the released model runs at 400 px only"})
            else:
                try:  # the baseline first (a run cut off by a time limit keeps it); a failure keeps ours
                    results["released"] = bench_released(opts, traincam, valcam)
                    emit("released", results["released"])
                except RuntimeError as error:
                    print(error, file=sys.stderr, flush=True)
                    emit("released", {"skipped": "the released code failed (its error is above)"})
        for variant in variants:
            if variant in CUDA_ONLY and resolve_device(opts.device).type != "cuda":
                emit(variant, {"skipped": "autocast runs on CUDA only"})
                continue
            for micro in opts.micro_bsz:
                name = f"{variant}/micro{micro}" if micro else variant
                try:
                    result = bench_ours(opts, traincam, valcam, variant, micro_bsz=micro or None)
                except torch.cuda.OutOfMemoryError:
                    result = None
                if result is None:
                    gc.collect()  # the failed step's tensors, freed with its frames, back to the device
                    torch.cuda.empty_cache()
                    emit(name, {"skipped": "out of memory"})
                    continue
                results[name] = result
                emit(name, result)
                whole = results.get(variant)
                if micro and whole is not None:
                    ratio = {key: results[name][key] / whole[key] for key in ("train_eps", "train_peak_gib")
                             if key in whole}
                    print(f"ratio {name}: " + " | ".join(f"{k} x{v:.2f}" for k, v in ratio.items()) +
                          " (micro-batches / whole batch)", flush=True)
                    emit(f"ratio_{name}", ratio)
        if "released" in results:
            base = results["released"]
            for variant in results:
                if variant != "released":
                    ratio = {k: results[variant][k] / base[k] for k in ("train_eps", "test_eps")
                             if k in results[variant] and k in base}
                    print(f"ratio {variant:9s}: " + " | ".join(f"{k[:-4]} x{v:.2f}" for k, v in ratio.items()) +
                          " (ours / released)", flush=True)
                    emit(f"ratio_{variant}", ratio)


if __name__ == "__main__":
    main()
