"""The test protocols of the papers this field compares with, as named presets of test.py (``--protocol``).

A protocol fixes what a test number is computed from: the episode seeds, the episodes per fold (per
benchmark), whether labels are scored at the query's original size or resized to the input side, and the
statistic a paper reports (the mean over seeds; some repositories also print the best seed, which is shown
beside the mean, labelled, only for them). Every value below was read from the repository's own test code;
:data:`PROTOCOLS` cites file and line (docs/evaluation.md has the same table, tests/test_protocols.py checks
it). Flags given on the command line override a preset's value; ``results.json`` records the preset, the
effective settings and which flags overrode it.

What a preset does *not* reproduce: another repository's episode sampler. ``--protocol bam`` tests with BAM's
five seed values, 1000 episodes and original-size labels, but the episodes are drawn by this repository's
(HSNet's) sampler from those seeds, not by BAM's; the numbers are comparable in protocol, not episode for
episode. Input sides (BAM's 473 / 641 px, PANet's 417 px) are a model setting here (``--img-size``), left
as they are. The test batch size does not change the episodes here (they are fixed by the seed when the
dataset is built); a preset with original-size labels sets ``--bsz 1``, which those labels need, as its source
does.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from data.benchmarks import TITLES

DEFAULT_PROTOCOL = "hsnet"
# Statistics: "mean": the mean over the seeds with its interval; "mean+best": the same, and the best seed beside
# it (the repository prints both); "mean+sd": the mean and the seeds' standard deviation (printed by every
# multi-seed run here anyway)
STATISTICS = ("mean", "mean+best", "mean+sd")


def numpy_seed_draw(seed: int, count: int) -> tuple[int, ...]:
    """``np.random.seed(seed); np.random.randint(0, 1000, count)``: how BAM, HDMNet and PI-CLIP choose their test
    seeds (``setup_seed(123)`` seeds NumPy's global RandomState, then ``seed_array`` is drawn from it)."""
    return tuple(int(s) for s in np.random.RandomState(seed).randint(0, 1000, count))


@dataclass(frozen=True)
class Protocol:
    """One paper's test protocol (the values test.py takes from ``--protocol``)."""

    name: str
    paper: str  # the method and its repository
    seeds: tuple[int, ...]
    episodes: Mapping[str, Optional[int]]  # benchmark -> episodes per fold (None: the benchmark's released count)
    original_labels: bool  # scored at the query's original size (--use-original-imgsize, --bsz 1)
    statistic: str  # one of STATISTICS
    sources: Mapping[str, str] = field(default_factory=dict)  # value -> "repository file:line" where it is read

    @property
    def best_of_seeds(self) -> bool:
        """Whether the repository prints the best seed beside the mean (shown, labelled, for these only)."""
        return self.statistic == "mean+best"

    def settings(self, benchmark: str) -> dict[str, Any]:
        """The test.py settings of this protocol on ``benchmark`` (flag dests: ``seeds``, ``nepisodes``,
        ``use_original_imgsize``, ``bsz`` where it needs 1)."""
        values: dict[str, Any] = {"seeds": list(self.seeds), "nepisodes": self.episodes[benchmark],
                                  "use_original_imgsize": self.original_labels}
        if self.original_labels:
            values["bsz"] = 1
        return values


_HSNET = "juhongm999/hsnet@6b1bc12"
_IMR = "Whileherham/IMR-HSNet@5757227"
_AFANET = "jarch-ma/AFANet@583c7e2"
_TLG = "jarch-ma/TLG@e65beb1"
_BAM = "chunbolang/BAM@c0f935c"
_HDM = "Pbihao/HDMNet@39ec8b2"
_PICLIP = "vangjin/PI-CLIP@971c598"
_PANET = "kaixin96/PANet@1695bf3"

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("hsnet", "HSNet, juhongm999/hsnet (the released protocol; DCAMA and Matcher test alike)", (0,),
             {"pascal": None, "coco": None, "fss": None}, False, "mean", {
                 "seed": f"{_HSNET} test.py:20 utils.fix_randseed(0)",
                 "episodes": f"{_HSNET} data/pascal.py:30, data/coco.py:30 (1000 unless trn); data/fss.py:32 "
                             "(every test image once)",
                 "labels": f"{_HSNET} test.py:88 img_size=400 (--use_original_imgsize optional, off: test.py:64)"}),
    Protocol("imr-hsnet", "IMR-HSNet, Whileherham/IMR-HSNet", (0,), {"pascal": 1000, "coco": 1000}, False, "mean", {
        "seed": f"{_IMR} test.py:21 utils.fix_randseed(0)",
        "episodes": f"{_IMR} data/pascal.py:34, data/coco.py:36 (1000 unless trn); README tests PASCAL-5i and "
                    "COCO-20i only",
        "labels": f"{_IMR} test.py:91 img_size=400 (--use_original_imgsize optional, off: test.py:63)"}),
    Protocol("afanet", "AFANet, jarch-ma/AFANet (built on the released IMR-HSNet code)", (6776,),
             {"pascal": 1000, "coco": 1000}, False, "mean", {
                 "seed": f"{_AFANET} test.py:23 utils.fix_randseed(6776)",
                 "episodes": f"{_AFANET} data/pascal.py:34, data/coco.py:36 (1000 unless trn); README tests "
                             "PASCAL-5i and COCO-20i only",
                 "labels": f"{_AFANET} test.py:110 img_size=400 (--use_original_imgsize optional, off: test.py:72; "
                           "--bsz 1 'must be 1': test.py:64)"}),
    Protocol("tlg", "TLG, jarch-ma/TLG (built on the released IMR-HSNet code)", (6776,),
             {"pascal": 1000, "coco": 5000}, False, "mean", {
                 "seed": f"{_TLG} test.py:25 utils.fix_randseed(6776)",
                 "episodes": f"{_TLG} data/pascal.py:34 (1000), data/coco.py:36 (5000) unless trn",
                 "labels": f"{_TLG} test.py:114 img_size=400 (--use_original_imgsize optional, off: test.py:73; "
                           "--bsz 1 'must be 1': test.py:65)"}),
    Protocol("bam", "BAM, chunbolang/BAM", numpy_seed_draw(123, 5), {"pascal": 1000, "coco": 1000}, True, "mean+best", {
        "seed": f"{_BAM} test.py:36-39 val_manual_seed = 123, val_num = 5, seed_array = np.random.randint(0,1000,5)",
        "episodes": f"{_BAM} test.py:193-197 test_num = 1000 (pascal), 1000 (coco)",
        "labels": f"{_BAM} config/pascal/pascal_split0_resnet50.yaml:44-46, config/coco/coco_split0_resnet50.yaml:"
                  "44-46 batch_size_val: 1, ori_resize: True (original label); test.py:239",
        "statistic": f"{_BAM} test.py:175-176 prints Best_mIoU and Mean_mIoU over the seeds"}),
    Protocol("hdmnet", "HDMNet, Pbihao/HDMNet", numpy_seed_draw(123, 10), {"pascal": 1000, "coco": 10000}, True,
             "mean+best", {
                 "seed": f"{_HDM} test.py:35-38 val_manual_seed = 123, val_num = 10, np.random.randint(0,1000,10)",
                 "episodes": f"{_HDM} test.py:192-196 test_num = 1000 (pascal), 10000 (coco)",
                 "labels": f"{_HDM} config/pascal/pascal_split0_resnet50_manet.yaml:45-47, config/coco/"
                           "coco_split0_resnet50_manet.yaml:44-46 batch_size_val: 1, ori_resize: True; test.py:239",
                 "statistic": f"{_HDM} test.py:174-175 prints Best_mIoU and Mean_mIoU"}),
    Protocol("pi-clip", "PI-CLIP, vangjin/PI-CLIP", numpy_seed_draw(123, 10), {"pascal": 1000, "coco": 5000}, True,
             "mean+best", {
                 "seed": f"{_PICLIP} test.py:25-28 val_manual_seed = 123, val_num = 10, np.random.randint(0,1000,10)",
                 "episodes": f"{_PICLIP} test.py:182-186 test_num = 1000 (pascal), 5000 (coco)",
                 "labels": f"{_PICLIP} config/pascal/pascal_split0_resnet50_manet.yaml:48-50, config/coco/"
                           "coco_split0_resnet50_manet.yaml:47-49 batch_size_val: 1, ori_resize: True; test.py:231",
                 "statistic": f"{_PICLIP} test.py:164-165 prints Best_mIoU and Mean_mIoU"}),
    Protocol("panet", "PANet, kaixin96/PANet", tuple(1234 + run for run in range(5)), {"pascal": 1000, "coco": 1000},
             False, "mean+sd", {
                 "seed": f"{_PANET} config.py:28 seed = 1234, config.py:64 n_runs = 5; test.py:68 "
                         "set_seed(seed + run)",
                 "episodes": f"{_PANET} config.py:65-66 n_steps = 1000, batch_size = 1 (test mode, VOC and COCO)",
                 "labels": f"{_PANET} test.py:57 Resize(size=input_size) on image and label (417 x 417: config.py:27)",
                 "statistic": f"{_PANET} test.py:141, 155-156 meanIoU mean and std over the runs"}),
)}

# The flags a preset sets (test.py's dests) and how each is spelt
PRESET_FLAGS = {"seeds": "--seeds", "nepisodes": "--nepisodes", "use_original_imgsize": "--use-original-imgsize",
                "bsz": "--bsz"}


class ProtocolError(ValueError):
    """A preset cannot be used as asked (a benchmark it does not define, flags that contradict it)."""


def resolve_protocol(args: argparse.Namespace, explicit: set[str]) -> dict[str, Any]:
    """Apply ``args.protocol``'s values to ``args`` where no flag in ``explicit`` (dests given on the command line)
    set them; returns what results.json records: ``{"name", "preset": its values on this benchmark,
    "overridden": {dest: [preset's, given]}, "statistic", "best_of_seeds", "sources"}``.

    Raises:
        ProtocolError: the preset does not define ``args.benchmark``, or an explicit flag contradicts it.
    """
    protocol = PROTOCOLS[args.protocol]
    preset: dict[str, Any] = {}  # stays empty for a benchmark no paper defines (a registered one) under the
    # default protocol: its own spec's episodes and seed 0, as without presets
    if args.benchmark in protocol.episodes:
        preset = protocol.settings(args.benchmark)
    elif args.protocol != DEFAULT_PROTOCOL or "protocol" in explicit:
        defined = ", ".join(TITLES.get(b, b) for b in protocol.episodes)
        raise ProtocolError(f"argument --protocol: {protocol.name} defines no {TITLES.get(args.benchmark, args.benchmark)} "
                            f"test (its source tests {defined}); choose another --protocol or --benchmark")
    overridden = {}
    for dest, value in preset.items():
        if dest in explicit:
            if getattr(args, dest) != value:
                overridden[dest] = [value, getattr(args, dest)]
        else:
            setattr(args, dest, value)
    if protocol.original_labels and "bsz" in overridden and "use_original_imgsize" not in explicit:
        raise ProtocolError(f"argument --bsz: --protocol {protocol.name} scores labels at their original size, which "
                            f"needs --bsz 1 (got --bsz {args.bsz}); leave --bsz out")
    return {"name": protocol.name, "preset": preset, "overridden": overridden, "statistic": protocol.statistic,
            "best_of_seeds": protocol.best_of_seeds, "sources": dict(protocol.sources)}


def protocol_record(args: argparse.Namespace) -> Optional[dict[str, Any]]:
    """What ``results.json`` records of the protocol: ``{"name", "source", "preset": the preset's values on this
    benchmark, "effective": the values tested with, "overridden": {dest: [preset's, given]}, "statistic",
    "best_of_seeds", "sources"}``; None for arguments without ``--protocol`` (runs of earlier versions)."""
    name = getattr(args, "protocol", None)
    if name is None:
        return None
    protocol = PROTOCOLS[name]
    preset = protocol.settings(args.benchmark) if args.benchmark in protocol.episodes else {}
    effective = {dest: getattr(args, dest) for dest in PRESET_FLAGS}
    effective["seeds"] = list(effective["seeds"])
    return {"name": name, "source": protocol.paper, "preset": preset, "effective": effective,
            "overridden": dict(getattr(args, "protocol_overridden", {}) or {}), "statistic": protocol.statistic,
            "best_of_seeds": protocol.best_of_seeds, "sources": dict(protocol.sources)}


def protocol_note(record: Optional[dict[str, Any]]) -> Optional[str]:
    """The table's note on the protocol: its name and source, and the flags that overrode it."""
    if record is None:
        return None
    text = f"Protocol: {record['name']} ({record['source']})"
    if record["overridden"]:
        text += "; overridden by " + ", ".join(f"{PRESET_FLAGS.get(dest, dest)} {_shown(given)} (preset: "
                                               f"{_shown(preset)})" for dest, (preset, given)
                                               in sorted(record["overridden"].items()))
    return text + "."


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return "the released count" if value is None else str(value)
