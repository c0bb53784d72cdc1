"""The paper's reported numbers, read from the one file that holds them (``engine/paper_results.json``).

The file keys IMR-HSNet's test numbers benchmark -> backbone -> shot -> metric -> ``{"folds": [f0..f3],
"mean": m}``, says where they come from (``source``) and under which test settings (``protocol``). A value
the file does not give is ``null`` and stays ``None`` here: nothing is estimated, and a setting the file has
no row for (another benchmark or backbone) gives ``None`` for every cell.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from data.benchmarks import NFOLDS

PAPER_RESULTS_FILE = Path(__file__).resolve().with_name("paper_results.json")
METRICS: dict[str, str] = {"miou": "mIoU", "fb_iou": "FB-IoU"}  # results.json key -> printed name


@dataclass(frozen=True)
class FoldValues:
    """One metric at one setting: a value per fold 0..NFOLDS-1 and their mean (percent; ``None``: no number).

    The paper's rows (:func:`paper_row`) and the lines of our tables have this shape.
    """

    folds: tuple[Optional[float], ...]  # fold 0..NFOLDS-1
    mean: Optional[float]

    @classmethod
    def empty(cls) -> "FoldValues":
        """No number anywhere (a setting the paper does not report)."""
        return cls((None,) * NFOLDS, None)


@functools.lru_cache(maxsize=None)
def _read(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    for benchmark, backbones in doc["results"].items():
        for backbone, shots in backbones.items():
            for shot, metrics in shots.items():
                for metric, row in metrics.items():
                    if metric not in METRICS or len(row["folds"]) != NFOLDS:
                        raise ValueError(f"{path}: results.{benchmark}.{backbone}.{shot}.{metric} must be one of "
                                         f"{sorted(METRICS)} with {NFOLDS} fold values")
    return doc


def paper_source(path: Path = PAPER_RESULTS_FILE) -> str:
    """Where the numbers come from (the file's ``paper`` and ``source`` notes)."""
    doc = _read(path)
    return f"{doc['paper']}. {doc['source']}"


def paper_protocol(path: Path = PAPER_RESULTS_FILE) -> dict[str, Any]:
    """The test settings behind the paper's numbers (``nepisodes``, ``img_size``), as test.py flag names."""
    return dict(_read(path)["protocol"])


def paper_row(benchmark: str, backbone: str, shot: int, metric: str,
              path: Path = PAPER_RESULTS_FILE) -> FoldValues:
    """The paper's ``metric`` ("miou" or "fb_iou") for a setting; :meth:`FoldValues.empty` when it has none."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    row = _read(path)["results"].get(benchmark, {}).get(backbone, {}).get(str(shot), {}).get(metric)
    if row is None:
        return FoldValues.empty()
    return FoldValues(tuple(row["folds"]), row["mean"])
