"""Helpers for the train.py / test.py tests: a tiny split of the synthetic benchmark, fake CAMs, event reading.

The tiny split keeps CPU tests fast: training on fold 0 sees two images of one class from each of folds 1-3
(so every query has another support image: 6 episodes), validation/test see two images of two classes of fold 0.
CAMs are random 2-D float32 tensors with the released file naming ``{name}--{class}.pt``.
"""
from __future__ import annotations

import struct
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

IMG_SIZE = 64


@dataclass(frozen=True)
class TinyInputs:
    datapath: Path
    splitpath: Path
    traincam: Path
    valcam: Path

    def argv(self, *extra: str) -> list[str]:
        """Common flags of a tiny CPU run (random backbone, vgg16, 64 px, no workers)."""
        return ["--datapath", str(self.datapath), "--splitpath", str(self.splitpath),
                "--traincampath", str(self.traincam), "--valcampath", str(self.valcam),
                "--img-size", str(IMG_SIZE), "--backbone", "vgg16", "--backbone-weights", "none",
                "--nworker", "0", "--device", "cpu", *extra]


def _lines_by_class(path: Path) -> dict[int, list[str]]:
    by_class: dict[int, list[str]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if line:
            by_class[int(line.split("__")[1])].append(line)
    return by_class


def make_tiny_inputs(synthetic_root: Path, out: Path, *, val_classes: int = 2, per_class: int = 2,
                     cam_seed: int = 0) -> TinyInputs:
    """Write a tiny PASCAL split (``out/splits``) and random CAMs (``out/cam_{trn,val}``) for it."""
    src = synthetic_root / "splits" / "pascal"
    splits = out / "splits"
    generator = torch.Generator().manual_seed(cam_seed)
    cams = {"trn": out / "cam_trn", "val": out / "cam_val"}
    side = IMG_SIZE // 8
    for split in ("trn", "val"):
        (splits / "pascal" / split).mkdir(parents=True, exist_ok=True)
        cams[split].mkdir(parents=True, exist_ok=True)
        for fold in range(4):
            by_class = _lines_by_class(src / split / f"fold{fold}.txt")
            keep = sorted(by_class)[: (val_classes if split == "val" else 1)]
            lines = [line for c in keep for line in by_class[c][:per_class]]
            (splits / "pascal" / split / f"fold{fold}.txt").write_text("".join(f"{x}\n" for x in lines))
            for line in lines:
                name, cc = line.split("__")
                torch.save(torch.rand(side, side, generator=generator), cams[split] / f"{name}--{int(cc) - 1}.pt")
    return TinyInputs(synthetic_root, splits, cams["trn"], cams["val"])


def read_scalar_events(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{"data/loss/trn_loss": [(step, value), ...], ...}`` from the tensorboardX event files under ``logdir``.

    Applies TensorBoard's purge rule: a ``SessionLog.START`` event with step S drops earlier events with
    step >= S of the same folder.
    """
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    out: dict[str, list[tuple[int, float]]] = {}
    for folder in sorted({p.parent for p in logdir.rglob("events.out.tfevents.*")}):
        run = folder.relative_to(logdir).as_posix()
        values: list[tuple[int, str, float]] = []
        for path in sorted(folder.glob("events.out.tfevents.*")):
            data = path.read_bytes()
            pos = 0
            while pos < len(data):
                (length,) = struct.unpack("<Q", data[pos:pos + 8])
                event = Event.FromString(data[pos + 12:pos + 12 + length])
                pos += 12 + length + 4
                if event.HasField("session_log") and event.session_log.status == SessionLog.START and event.step:
                    values = [v for v in values if v[0] < event.step]
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        values.append((event.step, value.tag, value.simple_value))
        for step, tag, value in values:
            key = run if run != "." else tag
            out.setdefault(key, []).append((step, value))
    return out
