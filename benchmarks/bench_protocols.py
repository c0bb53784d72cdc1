"""How much the test protocol alone moves a number: one checkpoint under every ``test.py --protocol`` preset.

    python benchmarks/bench_protocols.py --out protocols_out -- --load demo_out/train/best_model.pt \\
        --datapath demo_out/data --splitpath demo_out/data/splits --traincampath demo_out/data/CAM_Train \\
        --valcampath demo_out/data/CAM_Val --backbone resnet50 --img-size 96 --stage 2 --masking paper

Everything after ``--`` goes to every ``test.py`` call (the checkpoint, the data, the model flags). For each
preset that defines ``--benchmark`` (:data:`engine.protocols.PROTOCOLS`) it reports, on ``--fold`` and
``--nshot``: the preset's number (the mean over its seeds) with its 95% bootstrap interval, and for the presets
with several seeds the best seed and **best-of-seeds minus the mean** with its 95% interval.

The presets share their test passes: the passes of one (episodes per fold, label size) run once, as one
``test.py --seeds ...`` call holding every seed any preset of that kind needs (e.g. HDMNet's and PI-CLIP's ten
PASCAL seeds are the same ten, BAM's five are their first five), and each preset takes its seeds' passes from
it. ``--check PRESET`` also runs ``test.py --protocol PRESET`` itself and stops with an error unless its mean
equals the one composed here (the composition is exact: a seed's episodes do not depend on the other seeds).

The interval of best-minus-mean resamples both what varies between labs: the query images (jointly across the
seeds, as :func:`engine.bootstrap.seed_mean_samples` does) and the seeds (drawn with replacement from the
preset's seeds). Drawing seeds with replacement repeats some, which lowers the best of them: the interval leans
low, so the inflation it shows is not overstated. Every result goes to ``OUT/protocols.json`` and a markdown
table to standard output.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.io import atomic_write_text  # noqa: E402
from data.benchmarks import EVAL_EPISODES  # noqa: E402
from engine.bootstrap import (DEFAULT_RESAMPLES, percentile_interval, plan_joint_resamples,  # noqa: E402
                              resampled_metrics, seed_mean_samples)
from engine.episode_records import Cell, EpisodeRecords, read_run  # noqa: E402
from engine.protocols import PROTOCOLS, Protocol  # noqa: E402

# what a preset's None (the released count) means; FSS-1000's None (every image once) has no count to pass on
RELEASED_EPISODES = {name: count for name, count in EVAL_EPISODES.items() if count}


def pass_kinds(presets: list[Protocol], benchmark: str) -> dict[tuple[int, bool], list[int]]:
    """``{(episodes, original labels): seeds}``: the test passes the presets need, each seed once per kind."""
    kinds: dict[tuple[int, bool], list[int]] = {}
    for preset in presets:
        episodes = preset.episodes[benchmark] or RELEASED_EPISODES[benchmark]
        seeds = kinds.setdefault((episodes, preset.original_labels), [])
        seeds.extend(seed for seed in preset.seeds if seed not in seeds)
    return kinds


def run_test(argv: list[str], logpath: Path) -> None:
    """``test.py ARGV --logpath LOGPATH``, resumed when the folder holds the run already (a rerun is free)."""
    resume = ["--resume"] if (logpath / "args.json").is_file() else []
    command = [sys.executable, str(REPO / "test.py"), *argv, "--logpath", str(logpath), *resume]
    print("$ " + " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def best_minus_mean_samples(records: list[EpisodeRecords], resamples: int, seed: int = 0) -> np.ndarray:
    """(R,) best-of-seeds minus mean-of-seeds mIoU per resample: query images drawn jointly across the seeds,
    then as many seeds as there are, with replacement, from the per-seed metrics of that draw."""
    plan = plan_joint_resamples(records, resamples)
    per_seed = np.stack([resampled_metrics(r, plan)[:, 0] for r in records])  # (S, R)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(records), size=(resamples, len(records)))  # (R, S)
    chosen = per_seed[picks, np.arange(resamples)[:, None]]
    return chosen.max(axis=1) - chosen.mean(axis=1)


def preset_row(preset: Protocol, records: dict[Cell, EpisodeRecords], fold: int, shot: int,
               resamples: int) -> dict[str, Any]:
    """The preset's numbers from its seeds' passes (``records`` of the preset's kind)."""
    cells = [records[Cell(seed, fold, shot)] for seed in preset.seeds]
    per_seed = [cell.metrics()[0] for cell in cells]
    mean_samples = seed_mean_samples(cells, resamples)[:, 0]
    row: dict[str, Any] = {"preset": preset.name, "seeds": list(preset.seeds), "episodes": len(cells[0]),
                           "original_labels": preset.original_labels, "miou_per_seed": per_seed,
                           "miou": float(np.mean(per_seed)), "miou_interval": percentile_interval(mean_samples)}
    if len(cells) > 1:
        inflation = best_minus_mean_samples(cells, resamples)
        row.update(best_seed_miou=max(per_seed), best_minus_mean=max(per_seed) - float(np.mean(per_seed)),
                   best_minus_mean_interval=percentile_interval(inflation),
                   seeds_sd=float(np.std(per_seed, ddof=1)))
    return row


def _interval(value: Optional[list[float]]) -> str:
    return f"[{value[0]:.2f}, {value[1]:.2f}]" if value else "n/a"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The protocol table as README markdown."""
    lines = ["| preset | seeds x episodes | labels | mIoU (mean over seeds) [95%] | best seed | best - mean [95%] |",
             "|---|---|---|---|---:|---|"]
    for row in rows:
        best = f"{row['best_seed_miou']:.2f}" if "best_seed_miou" in row else ""
        inflation = (f"+{row['best_minus_mean']:.2f} {_interval(row['best_minus_mean_interval'])}"
                     if "best_minus_mean" in row else "")
        lines.append(f"| {row['preset']} | {len(row['seeds'])} x {row['episodes']} | "
                     f"{'original' if row['original_labels'] else 'resized'} | {row['miou']:.2f} "
                     f"{_interval(row['miou_interval'])} | {best} | {inflation} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    test_argv = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     usage="%(prog)s --out DIR [options] -- TEST.PY FLAGS (--load, data, model)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the test runs and protocols.json")
    parser.add_argument("--benchmark", default="pascal", choices=sorted(RELEASED_EPISODES))
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--nshot", type=int, default=1)
    parser.add_argument("--presets", nargs="+", default=None, choices=sorted(PROTOCOLS),
                        help="default: every preset that defines --benchmark")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES)
    parser.add_argument("--check", nargs="*", default=["afanet"], choices=sorted(PROTOCOLS),
                        help="presets also run as test.py --protocol, whose mean must equal the composed one")
    opts = parser.parse_args(own)
    if not test_argv:
        parser.error("give test.py's flags after -- (at least --load and the data)")
    names = opts.presets or [name for name, p in PROTOCOLS.items() if opts.benchmark in p.episodes]
    presets = [PROTOCOLS[name] for name in names]
    common = [*test_argv, "--benchmark", opts.benchmark, "--fold", str(opts.fold), "--nshot", str(opts.nshot)]
    records: dict[tuple[int, bool], dict[Cell, EpisodeRecords]] = {}
    for (episodes, original), seeds in pass_kinds(presets, opts.benchmark).items():
        folder = opts.out / f"{'original' if original else 'resized'}_{episodes}"
        label_flags = ["--use-original-imgsize", "--bsz", "1"] if original else []
        run_test([*common, "--seeds", *map(str, seeds), "--nepisodes", str(episodes), *label_flags], folder)
        records[(episodes, original)] = read_run(folder)[1]
    rows = []
    for preset in presets:
        kind = (preset.episodes[opts.benchmark] or RELEASED_EPISODES[opts.benchmark], preset.original_labels)
        rows.append(preset_row(preset, records[kind], opts.fold, opts.nshot, opts.resamples))
    for name in opts.check:
        folder = opts.out / f"check_{name}"
        run_test([*common, "--protocol", name], folder)
        _, checked = read_run(folder)
        direct = float(np.mean([cell.metrics()[0] for cell in checked.values()]))
        composed = next(row["miou"] for row in rows if row["preset"] == name)
        if abs(direct - composed) > 1e-9:
            raise SystemExit(f"check failed: test.py --protocol {name} gives mIoU {direct!r}, composed {composed!r}")
        print(f"check: test.py --protocol {name} gives the composed mIoU ({direct:.4f})", flush=True)
    atomic_write_text(json.dumps({"benchmark": opts.benchmark, "fold": opts.fold, "nshot": opts.nshot,
                                  "test_argv": test_argv, "resamples": opts.resamples, "rows": rows}, indent=1),
                      opts.out / "protocols.json")
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
