"""The command-line flags of train.py and test.py, defined once, validated and resolved.

Released flags keep their names and defaults (``--use_original_imgsize`` is spelt ``--use-original-imgsize`` like
every other flag, the released spelling kept as an alias); the flags added by this reproduction are in each
script's ``-h``. test.py's ``--fold``, ``--nshot`` and ``--seeds`` (alias ``--seed``) also take several values
(``args.folds``, ``args.nshots``, ``args.seeds``; one value works as released; ``args.seed`` is the first seed),
and its ``--load`` is then a path template holding ``{fold}`` (``args.checkpoints``: fold -> checkpoint, every
one checked before any work).

Paths: a path given on the command line is taken relative to the working directory, as any shell user expects;
the *defaults* are not: the released ``../Datasets_HSN`` meant "next to the repository", so the default data
root is ``<repo>/../Datasets_HSN`` wherever the script is started from. Every path is made absolute, and a
missing one is reported with the flag that names it.

The flags train.py and test.py share with other scripts are declared in :mod:`common.flags` (one home, with the
values that differ per script); the flags of these two scripts alone are declared here.

Settings, each resolved once, in this order (nothing else writes to the arguments; ``args.json`` records them):

* :func:`parse_args`: the flags; test.py: ``args.command`` (the command line, for ``results.json``);
* :func:`validate_and_resolve`: every value checked (the error names the flag); the paths made absolute
  (``datapath``, ``traincampath`` / ``valcampath``: one folder for COCO and FSS-1000, ``splitpath``,
  ``backbone_weights``: None for ``none``); test.py: ``args.seed`` (the first of ``--seeds``),
  ``args.checkpoints`` (fold -> checkpoint, each one checked) and ``args.load`` (absolute);
* :func:`engine.training.decide_seed`: train.py's ``args.seed`` when ``--seed`` is left out: the run's own on
  ``--resume``, otherwise drawn as released; the same on every rank. The ``--resume`` check
  (:mod:`engine.run_folder`) only reads and compares;
* :func:`engine.training.record_arguments` (train.py) and test.py's ``main``: ``args.cam_manifests``, the
  digests of the CAM folders' manifests when the run starts (a resumed run warns when they changed).
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path
from typing import Literal, Optional, Sequence

from common.cli import ArgumentParser
from common.flags import add_flags, check_minimums
from common.paths import DEFAULT_DATAPATH, LOG_ROOT
from data.benchmarks import BENCHMARKS, DEFAULT_CAM_DIRS, FOLD_BENCHMARKS, NFOLDS
from data.episodes import EPISODE_RNGS
from engine.bootstrap import DEFAULT_RESAMPLES
from engine.protocols import DEFAULT_PROTOCOL, PROTOCOLS, ProtocolError, resolve_protocol
from model.backbone import BACKBONES
from model.masking import MASKING_MODES

Script = Literal["train", "test"]
FOLD_PLACEHOLDER = "{fold}"  # in test.py's --load: replaced by each --fold


def build_parser(script: Script) -> argparse.ArgumentParser:
    """The parser of ``train.py`` (``script="train"``) or ``test.py`` (``script="test"``)."""
    training = script == "train"
    parser = ArgumentParser(
        description=("Train" if training else "Test") + " IMR-HSNet (few-shot segmentation from image label text)")

    given = {"benchmarks": BENCHMARKS, "folds": range(NFOLDS), "backbones": tuple(BACKBONES),
             "maskings": tuple(MASKING_MODES), "resamples": DEFAULT_RESAMPLES}
    data = parser.add_argument_group("data")
    add_flags(data, script, "--datapath", "--benchmark", "--fold", "--traincampath", "--valcampath", "--splitpath",
              "--img-size", "--nepisodes", "--nworker", "--strict-masks", "--bsz", **given)
    model = parser.add_argument_group("model")
    add_flags(model, script, "--backbone", "--stage", "--masking", "--backbone-weights", **given)
    run = parser.add_argument_group("run")
    add_flags(run, script, "--logpath", "--device", "--amp", "--compile", "--tf32", "--seed", **given)
    if training:
        run.add_argument("--micro-bsz", dest="micro_bsz", type=str, default=None, metavar="M|auto",
                         help="compute each batch of --bsz episodes as passes of at most M episodes, one optimizer "
                              "step per batch (the same step: the released recipe on a smaller GPU; per rank under "
                              "DDP); auto: the largest M whose step fits the GPU (the whole batch on a CPU)")
        run.add_argument("--checkpoint-learner", action="store_true",
                         help="activation checkpointing of the correlation and the 4D-convolution learner: they "
                              "run again in backward, so the graph keeps less memory (for GPUs too small for the "
                              "batch); same gradients, about a third more time")
        run.add_argument("--episode-rng", dest="episode_rng", type=str, default="independent", choices=EPISODE_RNGS,
                         help="training episodes: independent draws per (seed, epoch, episode), or 'released': as the "
                              "released train.py drew them with --nworker workers on PyTorch < 1.9 (every worker "
                              "forked the same NumPy state: COCO repeats each batch --nworker times in a row, "
                              "PASCAL's workers draw correlated supports); both reproducible from --seed")
        add_flags(run, script, "--lr", "--niter", "--resume")
        run.add_argument("--slim-checkpoints", action="store_true",
                         help="best_model.pt without the frozen backbone's tensors, like last.pt (VGG16: ~20 MB "
                              "instead of ~570 MB); test.py/predict.py then need the run's --backbone-weights "
                              "(read from the file); default: the released format, which the authors' tools read")
    else:
        add_flags(run, script, "--bootstrap", "--load", **given)
        add_flags(run, script, "--nshot")
        run.add_argument("--visualize", action="store_true",
                         help="write support/query/prediction images to <run folder>/vis")
        run.add_argument("--use-original-imgsize", dest="use_original_imgsize", action="store_true",
                         help="score predictions at the query's original size (needs --bsz 1; the released "
                              "spelling --use_original_imgsize works too)")
        run.add_argument("--use_original_imgsize", dest="use_original_imgsize", action="store_true",
                         help=argparse.SUPPRESS)  # the released spelling
        add_flags(run, script, "--resume")
        run.add_argument("--protocol", type=str, default=DEFAULT_PROTOCOL, choices=tuple(PROTOCOLS),
                         help="a paper's test protocol: its seeds, episodes per fold, label size and statistic "
                              "(engine/protocols.py, docs/evaluation.md; default: hsnet, the released one); "
                              "--seeds, --nepisodes, --use-original-imgsize and --bsz given beside it override it")
    return parser


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
        path = Path(args.load.replace(FOLD_PLACEHOLDER, str(fold))).expanduser().resolve()
        if not path.is_file():
            parser.error(f"argument --load: checkpoint of fold {fold} not found: {path} (from --load {args.load})")
        checkpoints[fold] = str(path)
    args.checkpoints = checkpoints
    templated = FOLD_PLACEHOLDER in args.load
    args.load = str(Path(args.load).expanduser().absolute()) if templated else checkpoints[args.folds[0]]


def explicit_flags(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> set[str]:
    """The dests of the flags ``argv`` gives (argparse fills only the attributes a namespace does not hold)."""
    unset = object()
    probe = argparse.Namespace(**{a.dest: unset for a in parser._actions if a.dest != argparse.SUPPRESS})
    parser.parse_args(argv, namespace=probe)
    return {dest for dest, value in vars(probe).items() if value is not unset}


def validate_and_resolve(args: argparse.Namespace, script: Script,
                         parser: Optional[argparse.ArgumentParser] = None,
                         explicit: Optional[set[str]] = None) -> argparse.Namespace:
    """Check values (errors name the flag and exit with status 2) and make every path absolute; test.py:
    ``--protocol``'s values where the flags in ``explicit`` (dests; None: every protocol value) do not set them."""
    parser = parser or build_parser(script)
    if script == "test" and getattr(args, "protocol", None):
        explicit = set(vars(args)) if explicit is None else explicit
        try:  # {dest: [preset's value, given value]}
            args.protocol_overridden = resolve_protocol(args, explicit)["overridden"]
        except ProtocolError as exc:
            parser.error(str(exc))
    check_minimums(parser, args, script)  # --bsz --stage --nepisodes --nworker --img-size --niter --bootstrap
    folds = [args.fold] if script == "train" else args.folds
    if args.benchmark not in FOLD_BENCHMARKS and folds != [0]:
        parser.error(f"argument --fold: {args.benchmark} (FSS-1000) has no folds, it has HSNet's fixed trn/val/test "
                     f"class lists; leave --fold out (got --fold {' '.join(map(str, folds))})")
    if script == "train":
        if args.micro_bsz not in (None, "auto"):
            if not args.micro_bsz.isdigit() or int(args.micro_bsz) < 1:
                parser.error(f"argument --micro-bsz: a number >= 1 or 'auto', got {args.micro_bsz!r}")
            args.micro_bsz = int(args.micro_bsz)
        if not args.lr > 0:
            parser.error(f"argument --lr: must be > 0, got {args.lr}")
    else:
        below = [nshot for nshot in args.nshots if nshot < 1]
        if below:
            parser.error(f"argument --nshot: must be >= 1, got {below[0]}")
        _distinct(parser, "--nshot", args.nshots)
        _distinct(parser, "--fold", args.folds)
        _distinct(parser, "--seeds", args.seeds)
        for seed in args.seeds:
            if not 0 <= seed < 2**32:
                parser.error(f"argument --seeds: a seed is 0 .. 2**32 - 1 (NumPy's RandomState), got {seed}")
        args.seed = args.seeds[0]  # the first (the only one by default), for code that reads one seed
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
    for flag, default in (("--traincampath", datapath / train_dir), ("--valcampath", datapath / val_dir)):
        value = getattr(args, flag[2:])
        if flag == "--valcampath" or script == "train":  # test.py reads no training CAMs: need not exist
            path = _existing(parser, flag, value, default)
        else:
            path = Path(value).expanduser().resolve() if value else default
        setattr(args, flag[2:], str(path))
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
    explicit = None
    if script == "test":  # recorded in results.json
        argv = sys.argv[1:] if argv is None else list(argv)
        args.command = shlex.join(["python", f"{script}.py", *argv])
        explicit = explicit_flags(parser, argv)
    return validate_and_resolve(args, script, parser, explicit)


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
