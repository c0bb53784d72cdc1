"""Test-loader throughput (episodes/s at 400 px): this repository vs. the released IMR-HSNet, in the same run.

    python benchmarks/bench_loader.py                                  # ours only
    python benchmarks/bench_loader.py --released-repo /path/to/IMR-HSNet [--benchmark coco] [--nshot 5]

A synthetic benchmark with VOC-sized images (300-500 px sides by default) and random 50x50 CAMs is made in a
temporary folder (or reuse one with --datapath/--campath). Both loaders read the same files: the released
dataset class runs in a child process (its package is named like ours) from a temporary working folder whose
``data/splits`` points at the synthetic split lists; its episode draws use the global NumPy RNG seeded with 0.
Timing covers building every batch of ``--episodes`` episodes (decode, resize, masks, CAMs, collation) after
one warm-up batch; 0 and 4 workers by default. The model needs ~1 s per 10-episode batch on a GPU, so a loader
well above ~10 episodes/s is not the bottleneck.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from data.benchmarks import FOLD_BENCHMARKS  # noqa: E402

RELEASED_CHILD = textwrap.dedent("""
    import json, os, sys, time
    repo, datapath, splits, cams, bench, fold, shot, bsz, nworker, n, threads = sys.argv[1:12]
    sys.path.insert(0, repo)
    work = os.environ["BENCH_WORKDIR"]
    os.makedirs(os.path.join(work, "data"), exist_ok=True)
    if not os.path.exists(os.path.join(work, "data", "splits")):
        os.symlink(splits, os.path.join(work, "data", "splits"))
    os.chdir(work)
    import numpy as np, torch
    if int(threads) > 0:
        torch.set_num_threads(int(threads))
    from torch.utils.data import DataLoader
    from data.dataset import FSSDataset
    FSSDataset.initialize(img_size=400, datapath=datapath, use_original_imgsize=False)
    cls = FSSDataset.datasets[bench]
    cam = cams.rstrip("/") + "/"
    ds = cls(datapath, fold=int(fold), transform=FSSDataset.transform, split="test", shot=int(shot),
             use_original_imgsize=False, cam_train_path=cam, cam_val_path=cam)
    np.random.seed(0)
    loader = DataLoader(ds, batch_size=int(bsz), shuffle=False, num_workers=int(nworker))
    nbatch = int(n) // int(bsz)
    it = iter(loader); next(it)
    start = time.perf_counter()
    for _ in range(nbatch):
        next(it)
    print(json.dumps({"eps": nbatch * int(bsz) / (time.perf_counter() - start)}))
""")


def make_tree(root: Path, benchmark: str, min_size: int, max_size: int) -> tuple[Path, Path, Path]:
    """Synthetic benchmark + random CAMs; returns (datapath, cam root of the test images, split root)."""
    from data.synthetic import make_benchmark
    from tests.data_helpers import write_fake_cams

    make_benchmark(root, seed=0, min_size=min_size, max_size=max_size, benchmarks=(benchmark,))
    cams = write_fake_cams(root / "splits", root / "cams")
    return root, cams["pascal_val" if benchmark == "pascal" else "coco"], root / "splits"


def ours(datapath: Path, cam: Path, splits: Path, args: argparse.Namespace, nworker: int) -> float:
    from data.dataset import build_dataloader, build_dataset

    ds = build_dataset(args.benchmark, datapath=datapath, fold=args.fold, split="test", shot=args.nshot,
                       img_size=400, cam_train_path=cam, cam_val_path=cam, splitpath=splits,
                       nepisodes=args.episodes + args.bsz)
    it = iter(build_dataloader(ds, bsz=args.bsz, nworker=nworker, shuffle=False, seed=0))
    next(it)
    nbatch = args.episodes // args.bsz
    start = time.perf_counter()
    for _ in range(nbatch):
        next(it)
    return nbatch * args.bsz / (time.perf_counter() - start)


def released(datapath: Path, cam: Path, splits: Path, args: argparse.Namespace, nworker: int) -> float:
    with tempfile.TemporaryDirectory() as work:
        proc = subprocess.run(
            [sys.executable, "-c", RELEASED_CHILD, str(args.released_repo), str(datapath), str(splits.resolve()),
             str(cam), args.benchmark, str(args.fold), str(args.nshot), str(args.bsz), str(nworker),
             str(args.episodes), str(args.threads)],
            env={**os.environ, "BENCH_WORKDIR": work}, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"released loader failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["eps"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", choices=FOLD_BENCHMARKS, default="pascal")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--nshot", type=int, default=1)
    parser.add_argument("--bsz", type=int, default=10, help="test.py's default batch size")
    parser.add_argument("--episodes", type=int, default=200, help="timed episodes per setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 4])
    parser.add_argument("--min-size", type=int, default=300)
    parser.add_argument("--max-size", type=int, default=500)
    parser.add_argument("--released-repo", type=Path, default=None, help="a checkout of the released IMR-HSNet")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads of the main process on both sides (0: torch's default); "
                             "on a busy machine 1 avoids thread oversubscription in the 0-worker setting")
    parser.add_argument("--datapath", type=Path, default=None, help="reuse a tree made by an earlier run")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.datapath or Path(tmp) / "bench"
        if (root / "synthetic.json").is_file() and (root / "cams").is_dir():
            cams = {"pascal": root / "cams" / "CAM_Val", "coco": root / "cams" / "CAM_COCO"}
            datapath, cam, splits = root, cams[args.benchmark], root / "splits"
        else:
            start = time.perf_counter()
            datapath, cam, splits = make_tree(root, args.benchmark, args.min_size, args.max_size)
            print(f"synthetic tree ({args.min_size}-{args.max_size} px) made in {time.perf_counter() - start:.0f}s")
        print(f"{args.benchmark} fold {args.fold} {args.nshot}-shot, 400 px, bsz {args.bsz}, "
              f"{args.episodes} episodes, {os.cpu_count()} CPU cores, main-process threads {torch.get_num_threads()}")
        for nworker in args.workers:
            a = ours(datapath, cam, splits, args, nworker)
            line = f"  workers={nworker}: ours {a:7.1f} episodes/s"
            if args.released_repo is not None:
                b = released(datapath, cam, splits, args, nworker)
                line += f" | released {b:7.1f} episodes/s | ratio ours/released {a / b:.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
