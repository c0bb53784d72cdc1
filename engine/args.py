"""The command-line flags of train.py and test.py, defined once, validated and resolved.

Released flags keep their names and defaults (``--datapath --benchmark --logpath --bsz --lr --niter --nworker
--fold --stage --backbone --traincampath --valcampath``; test: ``--load --nshot --visualize``, and
``--use_original_imgsize`` spelt ``--use-original-imgsize`` like every other flag, the released spelling kept as
an alias). Flags added by this reproduction: ``--splitpath --device --img-size --masking
--backbone-weights --seed --nepisodes --amp [fp16|bf16] --tf32 --strict-masks --resume``, train.py's ``--episode-rng
--slim-checkpoints --checkpoint-learner``;
test only: ``--seeds`` (alias ``--seed``), ``--bootstrap``. test.py's ``--fold``, ``--nshot`` and ``--seeds``
also take several values (``args.folds``, ``args.nshots``, ``args.seeds``; one value works as released;
``args.seed`` is the first seed), and its ``--load`` is then a path template holding ``{fold}``
(``args.checkpoints``: fold -> checkpoint, every one checked before any work).

Paths: a path given on the command line is taken relative to the working directory, as any shell user expects;
the *defaults* are not: the released ``../Datasets_HSN`` meant "next to the repository", so the default data
root is ``<repo>/../Datasets_HSN`` wherever the script is started from. Every path is made absolute, and a
missing one is reported with the flag that names it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path
from typing import Literal, Optional, Sequence

from common.cli import ArgumentParser, HelpFormatter
from common.paths import DEFAULT_DATAPATH, LOG_ROOT
from data.benchmarks import BENCHMARKS, DEFAULT_CAM_DIRS, FOLD_BENCHMARKS, NFOLDS
from data.episodes import EPISODE_RNGS
from model.backbone import BACKBONES
from model.masking import MASKING_MODES

AMP_CHOICES = ("fp16", "bf16")

Script = Literal["train", "test"]
FOLD_PLACEHOLDER = "{fold}"  # in test.py's --load: replaced by each --fold


def build_parser(script: Script) -> argparse.ArgumentParser:
    """The parser of ``train.py`` (``script="train"``) or ``test.py`` (``script="test"``)."""
    training = script == "train"
    parser = ArgumentParser(
        description=("Train" if training else "Test") + " IMR-HSNet (few-shot segmentation from image label text)",
        formatter_class=HelpFormatter)

    data = parser.add_argument_group("data")
    data.add_argument("--datapath", type=str, default=None,
                      help=f"root holding VOC2012/, COCO2014/ and FSS-1000/ (default: {DEFAULT_DATAPATH})")
    data.add_argument("--benchmark", type=str, default="pascal", choices=BENCHMARKS, help="few-shot benchmark")
    if training:
        data.add_argument("--fold", type=int, default=0, choices=range(NFOLDS),
                          help="cross-validation fold of PASCAL-5i / COCO-20i (FSS-1000 has none: leave it out)")
    else:
        data.add_argument("--fold", dest="folds", type=int, nargs="+", default=[0], choices=range(NFOLDS),
                          metavar="FOLD", help="cross-validation fold(s) of PASCAL-5i / COCO-20i (FSS-1000 has "
                                              "none: leave it out); several (e.g. 0 1 2 3) need a --load template "
                                              "holding {fold}")
    data.add_argument("--traincampath", type=str, default=None,
                      help="folder of the training images' CAMs ({name}--{class}.pt); default "
                           "<datapath>/CAM_Train (PASCAL), <datapath>/CAM_COCO (COCO) or <datapath>/CAM_FSS "
                           "(FSS-1000); COCO and FSS-1000 use one folder for both")
    data.add_argument("--valcampath", type=str, default=None,
                      help="folder of the validation/test images' CAMs; default <datapath>/CAM_Val (PASCAL) "
                           "or the COCO / FSS-1000 CAM folder")
    data.add_argument("--splitpath", type=str, default=None,
                      help="folder holding pascal/, coco/ and fss/ split lists in HSNet's data/splits layout (default: "
                           "fetched once from HSNet's repository into <repo>/.cache/splits, SHA-256 checked)")
    data.add_argument("--img-size", dest="img_size", type=int, default=400,
                      help="square input side (CAMs are img_size/8 a side)")
    data.add_argument("--nepisodes", type=int, default=None,
                      help="episodes per validation/test pass, the first N of the released sequence (default: the "
                           "released count: 1000 on PASCAL-5i / COCO-20i, every image of the split once on FSS-1000, "
                           "as HSNet: 2400)")
    data.add_argument("--nworker", type=int, default=8, help="data-loader worker processes")
    data.add_argument("--strict-masks", dest="strict_masks", action="store_true",
                      help="stop at a mask value outside the class range (default: read it as background, as the "
                           "released loaders do, with one warning per file and a count at the end)")
    data.add_argument("--bsz", type=int, default=40 if training else 10,
                      help="episodes per batch (global: split over GPUs / DDP ranks)")

    model = parser.add_argument_group("model")
    model.add_argument("--backbone", type=str, default="resnet50", choices=tuple(BACKBONES), help="feature extractor")
    model.add_argument("--stage", type=int, default=2, help="IMR iterations (released: 2 PASCAL, 3 COCO)")
    model.add_argument("--masking", type=str, default="released", choices=tuple(MASKING_MODES),
                       help="feature masking with CAMs: as the released code does it, or as the paper describes")
    model.add_argument("--backbone-weights", dest="backbone_weights", type=str,
                       default="imagenet" if training else "none",
                       help="initial backbone weights: 'imagenet', 'none' (random), or a torchvision state-dict "
                            "file" + ("" if training else " (test: a full --load checkpoint holds the backbone; a "
                                                              "slim one names the weights it needs, used by default)"))

    run = parser.add_argument_group("run")
    default_run = (f"{LOG_ROOT}/_MMDD_HHMMSS.log, the start time" if training else
                   f"{LOG_ROOT}/_TEST_<run of --load>_MMDD_HHMMSS.log")
    run.add_argument("--logpath", type=str, default="",
                     help=f"run name: relative names go to {LOG_ROOT}/<name>.log as released (a name already ending "
                          f"in .log is not suffixed again); an absolute path is the run folder itself (default: "
                          f"{default_run})")
    run.add_argument("--device", type=str, default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    run.add_argument("--amp", nargs="?", const="fp16", default=False, choices=AMP_CHOICES,
                     help="autocast on CUDA: fp16 (float16 with a GradScaler; what --amp alone means) or bf16 "
                          "(bfloat16, no scaler)")
    run.add_argument("--compile", action="store_true",
                     help="torch.compile the 4D-convolution learner (first steps slower while it compiles)")
    run.add_argument("--tf32", action="store_true",
                     help="allow TF32 float32 matmuls/convolutions on Ampere+ GPUs: faster, not the released "
                          "numerics (the released code ran without TF32)")
    if training:
        run.add_argument("--seed", type=int, default=None,
                         help="base seed of the per-epoch episode draws (default: drawn at random, as released, "
                              "and saved with the run)")
    else:
        run.add_argument("--seed", "--seeds", dest="seeds", type=int, nargs="+", default=[0], metavar="SEED",
                         help="episode seed(s) (released: 0); several (e.g. 0 1 2 3 4) run the protocol once per "
                              "seed and report each seed's number, their mean and standard deviation")
        run.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                         help="bootstrap resamples of the episodes for the 95%% intervals of every number "
                              "(0: no intervals)")
    if training:
        run.add_argument("--checkpoint-learner", action="store_true",
                         help="activation checkpointing of the correlation and the 4D-convolution learner: they "
                              "run again in backward, so the graph keeps less memory (for GPUs too small for the "
                              "batch); same gradients, about a third more time")
        run.add_argument("--episode-rng", dest="episode_rng", type=str, default="independent", choices=EPISODE_RNGS,
                         help="training episodes: independent draws per (seed, epoch, episode), or 'released': as the "
                              "released train.py drew them with --nworker workers on PyTorch < 1.9 (every worker "
                              "forked the same NumPy state: COCO repeats each batch --nworker times in a row, "
                              "PASCAL's workers draw correlated supports); both reproducible from --seed")
        run.add_argument("--lr", type=float, default=4e-4, help="Adam learning rate")
        run.add_argument("--niter", type=int, default=400, help="number of epochs")
        run.add_argument("--resume", action="store_true",
                         help="continue the run in --logpath from its last.pt")
        run.add_argument("--slim-checkpoints", action="store_true",
                         help="best_model.pt without the frozen backbone's tensors, like last.pt (VGG16: ~20 MB "
                              "instead of ~570 MB); test.py/predict.py then need the run's --backbone-weights "
                              "(read from the file); default: the released format, which the authors' tools read")
    else:
        run.add_argument("--load", type=str, default=None,
                         help="checkpoint to test (best_model.pt format); with several folds a path template "
                              "holding {fold}, e.g. logs/pascal_f{fold}.log/best_model.pt")
        run.add_argument("--nshot", dest="nshots", type=int, nargs="+", default=[1], metavar="NSHOT",
                         help="support images per episode; several (e.g. 1 5) are tested one after the other")
        run.add_argument("--visualize", action="store_true",
                         help="write support/query/prediction images to <run folder>/vis")
        run.add_argument("--use-original-imgsize", dest="use_original_imgsize", action="store_true",
                         help="score predictions at the query's original size (needs --bsz 1; the released "
                              "spelling --use_original_imgsize works too)")
        run.add_argument("--use_original_imgsize", dest="use_original_imgsize", action="store_true",
                         help=argparse.SUPPRESS)  # the released spelling
        run.add_argument("--resume", action="store_true",
                         help="continue the interrupted test run in --logpath: its finished (seed, fold, shot) "
                              "cells are kept, the others run")
    return parser


def _positive(parser: argparse.ArgumentParser, flag: str, value: float, minimum: float = 1) -> None:
    if value < minimum:
        parser.error(f"argument {flag}: must be >= {minimum}, got {value}")


def _existing(parser: argparse.ArgumentParser, flag: str, value: Optional[str], default: Path,
              kind: str = "folder") -> Path:
    """Absolute path of a flag's value (CWD-relative) or of its default; error naming the flag if missing."""
    path = Path(value).expanduser().resolve() if value else default
    exists = path.is_dir() if kind == "folder" else path.is_file()
    if not exists:
        origin = f"{flag} {value}" if value else f"{flag} (default)"
        parser.error(f"argument {flag}: {kind} not found: {path} (from {origin})")
    return path


def _distinct(parser: argparse.ArgumentParser, flag: str, values: Sequence[int]) -> None:
    if len(set(values)) != len(values):
        parser.error(f"argument {flag}: each value once, got {' '.join(map(str, values))}")


def fold_checkpoint(load: str, fold: int) -> str:
    """The checkpoint of ``fold``: ``load`` with ``{fold}`` replaced by the fold number (a plain path as is)."""
    return load.replace(FOLD_PLACEHOLDER, str(fold))


def _resolve_checkpoints(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check ``--load`` for every fold before any work starts; set ``args.checkpoints`` (fold -> absolute path).

    ``args.load`` becomes absolute: the file itself for a plain path, the template (still holding ``{fold}``)
    otherwise.
    """
    if not args.load:
        parser.error("argument --load: a checkpoint is required (e.g. logs/<run>.log/best_model.pt)")
    if len(args.folds) > 1 and FOLD_PLACEHOLDER not in args.load:
        parser.error(f"argument --load: several folds ({' '.join(map(str, args.folds))}) need one checkpoint each: "
                     f"give a path template holding {FOLD_PLACEHOLDER}, e.g. logs/pascal_f{FOLD_PLACEHOLDER}.log/"
                     f"best_model.pt (got {args.load})")
    checkpoints = {}
    for fold in args.folds:
        path = Path(fold_checkpoint(args.load, fold)).expanduser().resolve()
        if not path.is_file():
            parser.error(f"argument --load: checkpoint of fold {fold} not found: {path} (from --load {args.load})")
        checkpoints[fold] = str(path)
    args.checkpoints = checkpoints
    templated = FOLD_PLACEHOLDER in args.load
    args.load = str(Path(args.load).expanduser().absolute()) if templated else checkpoints[args.folds[0]]


def validate_and_resolve(args: argparse.Namespace, script: Script,
                         parser: Optional[argparse.ArgumentParser] = None) -> argparse.Namespace:
    """Check values (errors name the flag and exit with status 2) and make every path absolute."""
    parser = parser or build_parser(script)
    _positive(parser, "--bsz", args.bsz)
    _positive(parser, "--stage", args.stage)
    if args.nepisodes is not None:
        _positive(parser, "--nepisodes", args.nepisodes)
    folds = [args.fold] if script == "train" else args.folds
    if args.benchmark not in FOLD_BENCHMARKS and folds != [0]:
        parser.error(f"argument --fold: {args.benchmark} (FSS-1000) has no folds, it has HSNet's fixed trn/val/test "
                     f"class lists; leave --fold out (got --fold {' '.join(map(str, folds))})")
    _positive(parser, "--nworker", args.nworker, 0)
    _positive(parser, "--img-size", args.img_size, 32)
    if script == "train":
        _positive(parser, "--niter", args.niter)
        if not args.lr > 0:
            parser.error(f"argument --lr: must be > 0, got {args.lr}")
    else:
        for nshot in args.nshots:
            _positive(parser, "--nshot", nshot)
        _distinct(parser, "--nshot", args.nshots)
        _distinct(parser, "--fold", args.folds)
        _distinct(parser, "--seeds", args.seeds)
        for seed in args.seeds:
            if not 0 <= seed < 2**32:
                parser.error(f"argument --seeds: a seed is 0 .. 2**32 - 1 (NumPy's RandomState), got {seed}")
        args.seed = args.seeds[0]  # the first (the only one by default), for code that reads one seed
        _positive(parser, "--bootstrap", args.bootstrap, 0)
        if args.resume and not args.logpath:
            parser.error("argument --resume: give --logpath, the folder of the test run to continue")
        if args.use_original_imgsize and args.bsz != 1:
            parser.error("argument --use-original-imgsize: needs --bsz 1 (query masks keep their own sizes)")
        _resolve_checkpoints(parser, args)

    datapath = _existing(parser, "--datapath", args.datapath, DEFAULT_DATAPATH)
    args.datapath = str(datapath)
    train_dir, val_dir = DEFAULT_CAM_DIRS[args.benchmark]
    if train_dir == val_dir:
        # One CAM folder for COCO (the released COCO dataset asserts traincampath == valcampath) and FSS-1000.
        if args.traincampath and args.valcampath and \
                Path(args.traincampath).resolve() != Path(args.valcampath).resolve():
            parser.error(f"arguments --traincampath/--valcampath: {args.benchmark} uses one CAM folder for both; "
                         f"got {args.traincampath} and {args.valcampath}")
        args.traincampath = args.valcampath = args.traincampath or args.valcampath
    needed = ["--valcampath"] + (["--traincampath"] if script == "train" else [])
    for flag, default in (("--traincampath", datapath / train_dir), ("--valcampath", datapath / val_dir)):
        attr = flag[2:]
        value = getattr(args, attr)
        if flag in needed:
            setattr(args, attr, str(_existing(parser, flag, value, default)))
        else:
            setattr(args, attr, str(Path(value).expanduser().resolve() if value else default))
    if args.splitpath:
        args.splitpath = str(_existing(parser, "--splitpath", args.splitpath, Path()))
    if args.backbone_weights.lower() == "none":
        if getattr(args, "slim_checkpoints", False):
            parser.error("argument --slim-checkpoints: not with --backbone-weights none: a slim best_model.pt leaves "
                         "the backbone out, and random backbone weights cannot be rebuilt to test it (pass "
                         "--backbone-weights imagenet or FILE, or leave --slim-checkpoints out)")
        args.backbone_weights = None
    elif args.backbone_weights != "imagenet":
        args.backbone_weights = str(_existing(parser, "--backbone-weights", args.backbone_weights, Path(),
                                              kind="file"))
    return args


def parse_args(script: Script, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse, validate and resolve the flags of ``train.py`` or ``test.py``."""
    parser = build_parser(script)
    args = parser.parse_args(argv)
    if script == "test":  # recorded in results.json
        args.command = shlex.join(["python", f"{script}.py", *(sys.argv[1:] if argv is None else argv)])
    return validate_and_resolve(args, script, parser)


def resolve_run_dir(logpath: str, *, training: bool, load: Optional[str] = None,
                    now: Optional[datetime.datetime] = None) -> Path:
    """The run folder: where logs, TensorBoard events, checkpoints and args.json go.

    As released: a relative name ``N`` becomes ``<repo>/logs/N.log``; an empty name becomes the time
    (``_MMDD_HHMMSS``); a test run without ``--logpath`` is ``_TEST_<run of --load>_MMDD_HHMMSS``.
    An absolute ``--logpath`` is used as the run folder itself. A name already ending in ``.log`` is not
    suffixed again (``fake.log`` -> ``logs/fake.log``), unless the run of an earlier version,
    ``logs/fake.log.log``, is there and ``logs/fake.log`` is not: then that one, so that ``--resume`` finds it.
    """
    logtime = (now or datetime.datetime.now()).strftime("_%m%d_%H%M%S")
    if logpath and Path(logpath).expanduser().is_absolute():
        return Path(logpath).expanduser()
    if not logpath and not training and load:
        logpath = "_TEST_" + Path(load).parent.name.split(".")[0] + logtime
    if not logpath:
        logpath = logtime
    if logpath.endswith(".log"):
        earlier = LOG_ROOT / (logpath + ".log")
        return earlier if earlier.is_dir() and not (LOG_ROOT / logpath).exists() else LOG_ROOT / logpath
    return LOG_ROOT / (logpath + ".log")


def flag_name(dest: str) -> str:
    """The command-line spelling of an argument of train.py / test.py (``img_size`` -> ``--img-size``)."""
    for script in ("train", "test"):
        for action in build_parser(script)._actions:
            if action.dest == dest and action.option_strings:
                return action.option_strings[-1]
    return "--" + dest


def args_to_json(args: argparse.Namespace) -> str:
    """The resolved arguments as pretty JSON (saved as ``args.json`` in the run folder)."""
    return json.dumps(vars(args), indent=2, sort_keys=True, default=str) + "\n"
