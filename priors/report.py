"""``evaluate_priors.py``: the quality of a prior folder (:mod:`priors.quality`) as a table
(``quality.md``, ``quality.csv``, ``quality.json``) and a picture of examples (``examples.png``: image | ground
truth | prior)."""
from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw

from common.cli import ArgumentParser, run_cli
from common.console import ensure_console_logging
from common.flags import add_flags
from common.io import atomic_write_bytes, atomic_write_text
from common.paths import DEFAULT_DATAPATH
from data.benchmarks import BENCHMARKS
from data.dataset import build_dataset
from data.fewshot import FewShotDataset
from priors.quality import RESOLUTIONS, class_names_of, evaluate_priors, prior_pairs, report_title

__all__ = ["build_parser", "examples_picture", "main", "run", "write_report"]

logger = logging.getLogger(__name__)
EXAMPLE_SIDE = 128  # px of each picture in examples.png


def _cell(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.2f}"


def markdown_table(title: str, summary: dict[str, Any]) -> str:
    """The report as a markdown table: per class and mean, IoU at the best threshold, at 0.5, whole image."""
    best = summary["best_threshold"]
    lines = [f"# {title}", "", f"| class | pairs | IoU at {best:.2f} (best) | IoU at 0.5 | whole image |",
             "|---|---|---|---|---|"]
    for row in summary["classes"]:
        lines.append(f"| {row['class_id']} {row['name']} | {row['pairs']} | {_cell(row['iou_best'])} | "
                     f"{_cell(row['iou_at_0.5'])} | {_cell(row['iou_full_image'])} |")
    lines.append(f"| **mean** | {sum(r['pairs'] for r in summary['classes'])} | **{_cell(summary['miou_best'])}** "
                 f"| {_cell(summary['miou_at_0.5'])} | {_cell(summary['miou_full_image'])} |")
    lines += ["", f"Background IoU at {best:.2f}: {_cell(summary['background_iou_best'])}. IoU in %, a class's "
              "intersections and unions summed over its (image, class) pairs; 'whole image': a prior that covers "
              "the whole image."]
    return "\n".join(lines) + "\n"


def csv_table(summary: dict[str, Any]) -> str:
    """The report as CSV: one row per class, then the mean."""
    def numbers(*values: Optional[float]) -> str:
        return ",".join("" if v is None else f"{v:.4f}" for v in values)

    rows = ["class_id,name,pairs,iou_best,iou_at_0.5,iou_full_image"]
    for row in summary["classes"]:
        rows.append(f"{row['class_id']},\"{row['name']}\",{row['pairs']},"
                    + numbers(row["iou_best"], row["iou_at_0.5"], row["iou_full_image"]))
    rows.append(f"mean,,{sum(r['pairs'] for r in summary['classes'])},"
                + numbers(summary["miou_best"], summary["miou_at_0.5"], summary["miou_full_image"]))
    return "\n".join(rows) + "\n"


def _heat(prior: torch.Tensor) -> np.ndarray:
    """(h, w) prior in [0, 1] -> (h, w, 3) uint8 JET colours."""
    levels = (prior.clamp(0, 1).numpy() * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def examples_picture(dataset: FewShotDataset, examples: Sequence[dict[str, Any]],
                     names: dict[int, str]) -> Image.Image:
    """One row per example: image | ground truth (white; grey: ignored pixels) | prior (JET), each square as the
    model sees them, captioned with the image name and class."""
    side = EXAMPLE_SIDE
    rows = []
    for item in examples:
        with Image.open(dataset.image_path(item["name"])) as img:
            picture = np.array(img.convert("RGB").resize((side, side), Image.BILINEAR))
        truth = np.where(item["valid"].numpy(), item["target"].numpy().astype(np.uint8) * 255, 128).astype(np.uint8)
        truth = np.array(Image.fromarray(truth).resize((side, side), Image.NEAREST).convert("RGB"))
        prior = np.array(Image.fromarray(_heat(item["prior"])).resize((side, side), Image.BILINEAR))
        tiles = [np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in (picture, truth, prior)]
        row = Image.fromarray(np.concatenate(tiles, axis=1))
        ImageDraw.Draw(row).text((5, 3), f"{item['name']} / {names.get(item['cls'], item['cls'])}", fill=(255, 255, 0))
        rows.append(np.array(row))
    if not rows:
        return Image.new("RGB", (3 * (side + 4), side + 4), (255, 255, 255))
    return Image.fromarray(np.concatenate(rows, axis=0))


def write_report(out: Path, title: str, summary: dict[str, Any], meta: dict[str, Any],
                 picture: Optional[Image.Image] = None) -> dict[str, Path]:
    """Write ``quality.md``, ``quality.csv``, ``quality.json`` (``meta`` and ``summary``) and, given a picture,
    ``examples.png`` into ``out`` (atomically); returns the paths by kind."""
    out = Path(out)
    written = {"md": atomic_write_text(markdown_table(title, summary), out / "quality.md"),
               "csv": atomic_write_text(csv_table(summary), out / "quality.csv"),
               "json": atomic_write_text(json.dumps({**meta, **summary}, indent=2) + "\n", out / "quality.json")}
    if picture is not None:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        written["png"] = atomic_write_bytes(buffer.getvalue(), out / "examples.png")
    return written


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """Flags of ``evaluate_priors.py``."""
    parser = ArgumentParser(prog="evaluate_priors.py",
                            description="IoU of a folder of CAM priors with the ground truth, per class and mean, "
                                        "at the best single threshold (0.05..0.95) and at 0.5")
    add_flags(parser, "evaluate_priors", "--benchmark", "--fold", "--split", benchmarks=BENCHMARKS)
    parser.add_argument("--priors", required=True, help="the prior folder ({image}--{class}.pt files)")
    add_flags(parser, "evaluate_priors", "--out", "--datapath", "--splitpath", "--cam-size")
    parser.add_argument("--resolution", choices=RESOLUTIONS, default="prior",
                        help="prior: score at the prior's size (the mask resized to it); image: at the mask's size "
                             "(the prior upsampled)")
    parser.add_argument("--examples", type=int, default=8, help="rows of examples.png")
    add_flags(parser, "evaluate_priors", "--no-progress")
    return parser


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Evaluate from command-line flags; returns the ``quality.json`` content. Bad input raises UserInputError."""
    parser = build_parser()
    args = parser.parse_args(argv)
    ensure_console_logging()
    if args.cam_size < 1 or args.examples < 0:
        parser.error("arguments --cam-size and --examples: must be >= 1 and >= 0")
    priors = Path(args.priors).expanduser().resolve()
    if not priors.is_dir():
        parser.error(f"argument --priors: {priors} is not a folder")
    datapath = Path(args.datapath).expanduser().resolve() if args.datapath else DEFAULT_DATAPATH
    if not datapath.is_dir():
        parser.error(f"argument --datapath: folder not found: {datapath}")
    dataset = build_dataset(args.benchmark, datapath=datapath, fold=args.fold, split=args.split,
                            splitpath=args.splitpath, nepisodes=1)
    quality, examples = evaluate_priors(dataset, priors, cam_size=args.cam_size, resolution=args.resolution,
                                        progress=args.progress, examples=args.examples)
    summary = quality.summary()
    meta = {"benchmark": args.benchmark, "split": args.split, "fold": args.fold, "priors": str(priors),
            "cam_size": args.cam_size, "resolution": args.resolution, "pairs": len(prior_pairs(dataset))}
    title = report_title(dataset, priors)
    written = write_report(Path(args.out).expanduser().resolve(), title, summary, meta,
                           examples_picture(dataset, examples, class_names_of(dataset)))
    print(markdown_table(title, summary), end="")
    print(f"written: {', '.join(str(p) for p in written.values())}")
    return {**meta, **summary}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``evaluate_priors.py``: 0 done, 2 bad input (one line naming the file or flag)."""
    return run_cli(lambda: run(argv), "evaluate_priors.py")
