"""What the TensorBoard watch summaries (engine/run_watch.py) cost a training epoch, on a CPU toy run.

    python benchmarks/bench_tensorboard.py                      # 5 epochs, 96 px, ResNet50 (random), CPU
    python benchmarks/bench_tensorboard.py --niter 9 --img-size 128 --json out.jsonl

One run of ``train.py``'s code on the synthetic PASCAL benchmark (made in a temporary folder, a few training
episodes per class, random CAMs), in which the watch summaries are on for epoch 0 (warm-up, not counted) and
then off and on in turn, so both kinds of epoch share the run, its machine load and its caches. It prints,
per epoch, the wall time from the start of its training pass to the end of its checkpoint and the seconds
spent inside the watch's own code (:attr:`engine.run_watch.RunWatch.cost_s`: drawing and writing the
summaries, capturing the shown episodes), then two ratios:

* ``cost share``: watch seconds / epoch seconds of the "on" epochs -- the direct measure;
* ``on/off``: mean "on" epoch time / mean "off" epoch time -- the same cost seen from outside, which on a busy
  machine is dominated by noise (it can come out below 1).

The session's start and end records (HParams, flags and final tables) are written once per run and reported
apart. A real epoch (hundreds of episodes at 400 px) has the same summaries to write and far more to compute,
so its share is smaller than this toy run's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import train  # noqa: E402
from benchmarks.bench_train_test import write_cams  # noqa: E402
from data.synthetic import make_benchmark  # noqa: E402
from engine import training  # noqa: E402
from engine.args import parse_args  # noqa: E402
from engine.run_watch import RunWatch  # noqa: E402


def trim_training_lists(datapath: Path, per_class: int) -> None:
    """Keep the first ``per_class`` images of each class in the PASCAL training lists (fewer episodes)."""
    for fold_file in sorted((datapath / "splits" / "pascal" / "trn").glob("fold*.txt")):
        kept: dict[str, list[str]] = {}
        for line in fold_file.read_text().split():
            kept.setdefault(line.split("__")[1], []).append(line)
        lines = [line for cls in sorted(kept) for line in kept[cls][:max(2, per_class)]]
        fold_file.write_text("".join(f"{line}\n" for line in lines))


class AlternatingWatch(RunWatch):
    """The run's watch, on at epoch 0 and every even epoch, off at odd ones; times every epoch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epochs: list[dict[str, Any]] = []
        self._start = 0.0
        self._cost_at_start = 0.0

    def begin_epoch(self) -> None:
        """Switch the summaries for the coming epoch and start its clock."""
        self.enabled = len(self.epochs) % 2 == 0
        self._start, self._cost_at_start = time.perf_counter(), self.cost_s
        super().begin_epoch()

    def end_epoch(self) -> None:
        """Stop the epoch's clock (called after its checkpoint)."""
        self.epochs.append({"epoch": len(self.epochs), "watch": self.enabled,
                            "epoch_s": time.perf_counter() - self._start,
                            "watch_s": self.cost_s - self._cost_at_start})
        self.enabled = True  # the session's end records


def main(argv: Any = None) -> dict[str, Any]:
    """Run the benchmark; returns (and prints) its result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--niter", type=int, default=5, help="epochs (epoch 0 is warm-up; then off, on, ...)")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--per-class", type=int, default=2, help="training images kept per class (>= 2)")
    parser.add_argument("--nepisodes", type=int, default=8, help="validation episodes")
    parser.add_argument("--bsz", type=int, default=4)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--json", type=Path, help="append the result as one JSON line")
    opts = parser.parse_args(argv)

    watches: list[AlternatingWatch] = []

    def make_watch(*args: Any, **kwargs: Any) -> AlternatingWatch:
        watches.append(AlternatingWatch(*args, **kwargs))
        return watches[-1]

    with tempfile.TemporaryDirectory(prefix="bench_tensorboard_") as tmp:
        datapath = make_benchmark(Path(tmp) / "data", seed=0, benchmarks=("pascal",))
        trim_training_lists(datapath, opts.per_class)
        trncam, valcam = write_cams(datapath, Path(tmp) / "cams", side=opts.img_size // 8)
        args = parse_args("train", [
            "--datapath", str(datapath), "--splitpath", str(datapath / "splits"), "--traincampath", str(trncam),
            "--valcampath", str(valcam), "--img-size", str(opts.img_size), "--backbone", opts.backbone,
            "--backbone-weights", "none", "--device", "cpu", "--nworker", "0", "--bsz", str(opts.bsz),
            "--nepisodes", str(opts.nepisodes), "--niter", str(opts.niter), "--seed", "0",
            "--logpath", str(Path(tmp) / "run")])
        original = training.RunWatch
        training.RunWatch = make_watch
        try:
            train.main(args, after_epoch=lambda epoch: watches[-1].end_epoch())
        finally:
            training.RunWatch = original
    watch = watches[-1]
    measured = watch.epochs[1:]  # epoch 0: warm-up
    on = [e for e in measured if e["watch"]]
    off = [e for e in measured if not e["watch"]]
    per_epoch_watch_s = sum(e["watch_s"] for e in watch.epochs)
    result = {
        "epochs": watch.epochs,
        "cost_share": sum(e["watch_s"] for e in on) / sum(e["epoch_s"] for e in on) if on else None,
        "on_off_ratio": (statistics.mean(e["epoch_s"] for e in on) / statistics.mean(e["epoch_s"] for e in off)
                         if on and off else None),
        "session_records_s": watch.cost_s - per_epoch_watch_s,
        "settings": vars(opts) | {"json": str(opts.json) if opts.json else None},
    }
    for e in watch.epochs:
        print(f"epoch {e['epoch']}: summaries {'on ' if e['watch'] else 'off'}  {e['epoch_s']:7.2f} s, "
              f"of which the watch {1000 * e['watch_s']:6.1f} ms" + ("  (warm-up)" if e["epoch"] == 0 else ""))
    if result["cost_share"] is not None:
        print(f"cost share (watch s / epoch s, 'on' epochs): {100 * result['cost_share']:.3f} %")
    if result["on_off_ratio"] is not None:
        print(f"on/off epoch time: {result['on_off_ratio']:.3f} (noise on a busy machine)")
    print(f"session start/end records: {1000 * result['session_records_s']:.1f} ms once per run")
    print("RESULT " + json.dumps(result))
    if opts.json:
        with opts.json.open("a") as out:
            out.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
