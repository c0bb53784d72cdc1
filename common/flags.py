"""The command-line flags that more than one script takes, each declared here once (timm's ``train.py`` habit,
with one table instead of copies).

A :class:`Flag` is a name, its group (``data``, ``model``, ``run``, ``clip``), the scripts that take it and its
``add_argument`` keywords, help text included, written once and the same in each of them. Where the scripts
genuinely want different defaults (``--bsz`` is 40 episodes in train.py, 10 in test.py, 32 images in the CAM
job), the declaration holds a per-script default table instead of one default (:data:`REQUIRED`: the script
requires the flag); ``--help`` appends each script's ``(default: X)``. Where a flag means something else in one
script (test.py's ``--fold`` takes several folds), that script's keywords are in :data:`EXCEPTIONS`, each with
its reason, and nowhere else. A script asks for its flags by name, in the order its ``--help`` lists them::

    add_flags(group, "train", "--datapath", "--benchmark", benchmarks=BENCHMARKS)

Values that live above ``common/`` (the benchmark names, the backbone names, a config's defaults) are
:class:`Given`: the caller passes them by keyword, so this module imports nothing but ``common``. A flag of one
script only is declared in that script's parser. ``tests/test_flags.py`` builds every parser of the repository
and checks each shared flag against its declaration here: the same type, help and default everywhere but in the
default tables and :data:`EXCEPTIONS`, and no flag declared twice.

Scripts (:data:`SCRIPTS`): ``train`` / ``test`` (train.py, test.py), ``cam`` (generate_cam_{voc,coco,fss}.py),
``evaluate_priors``, ``predict``, ``demo``, ``compare``, ``pretrain`` (python -m apps.pretrain), ``import``
(python -m data.priors import), ``prepare`` (python -m data.prepare), ``synthetic`` (python -m data.synthetic),
``launch`` (launch.py grid, whose grid axes take several values: one cell each).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

from common.constants import CAM_SIZE, IMG_SIZE
from common.paths import DEFAULT_DATAPATH, LOG_ROOT, REPO_ROOT

__all__ = ["EXCEPTIONS", "FLAGS", "GROUPS", "REQUIRED", "SCRIPTS", "Flag", "Given", "add_flags", "check_minimums",
           "declared_options", "flag_options"]

SCRIPTS = {
    "train": "train.py", "test": "test.py", "cam": "generate_cam_{voc,coco,fss}.py",
    "evaluate_priors": "evaluate_priors.py", "predict": "predict.py", "demo": "demo.py", "compare": "compare.py",
    "pretrain": "python -m apps.pretrain", "import": "python -m data.priors import",
    "prepare": "python -m data.prepare", "synthetic": "python -m data.synthetic", "launch": "launch.py grid",
}
GROUPS = ("data", "model", "run", "clip")


@dataclass(frozen=True)
class Given:
    """A keyword value the caller of :func:`add_flags` passes under ``name`` (it lives above ``common/``)."""

    name: str


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()  # in a default table: the script requires the flag (``required=True``, no default)


@dataclass(frozen=True)
class Flag:
    """One flag of several scripts: ``options``, its ``add_argument`` keywords in each of ``scripts``;
    ``defaults``, the per-script default table (empty where one default, if any, is in ``options``);
    ``minimum``, the least value :func:`check_minimums` lets through (a table script -> its own, where they differ)."""

    name: str
    group: str
    scripts: tuple[str, ...]
    options: Mapping[str, Any]
    defaults: Mapping[str, Any]
    minimum: Union[None, int, Mapping[str, int]] = None


def flag(name: str, group: str, scripts: Union[tuple[str, ...], Mapping[str, Any]],
         minimum: Union[None, int, Mapping[str, int]] = None, **options: Any) -> Flag:
    """The flag ``name`` of ``scripts``: a tuple (``options`` alike in each) or a table script -> its default."""
    defaults = dict(scripts) if isinstance(scripts, Mapping) else {}
    assert group in GROUPS and set(scripts) <= set(SCRIPTS) and not (defaults and "default" in options), name
    return Flag(name, group, tuple(scripts), options, defaults, minimum)


AMP_CHOICES = ("fp16", "bf16")
CLIP_RANDOM = ("'random' (or 'random:SEED') builds that CLIP from random weights to run offline, but its priors then "
               "carry NO class information (a file named 'random': ./random)")

_DATA = [
    flag("--datapath", "data", ("train", "test", "cam", "evaluate_priors", "import", "prepare"), type=str,
         default=None, help=f"root holding the benchmarks' images (VOC2012/, COCO2014/, FSS-1000/), the default for "
                            f"the paths below (default: {DEFAULT_DATAPATH})"),
    flag("--benchmark", "data", {"train": "pascal", "test": "pascal", "evaluate_priors": "pascal",
                                 "import": REQUIRED, "pretrain": Given("benchmark"), "synthetic": None,
                                 "launch": ["pascal"]},
         type=str, choices=Given("benchmarks"), help="few-shot benchmark: its classes, split lists and masks"),
    flag("--fold", "data", {"train": 0, "test": None, "evaluate_priors": 0, "pretrain": Given("fold"),
                            "launch": Given("all_folds")}, type=int,
         choices=Given("folds"), help="cross-validation fold of PASCAL-5i / COCO-20i (FSS-1000 has none: leave it "
                                      "out); its test classes are never trained on"),
    flag("--nshot", "data", {"test": [1], "launch": [1, 5]}, dest="nshots", type=int, nargs="+", metavar="NSHOT",
         help="support images per episode; several (e.g. 1 5) are tested one after the other"),
    flag("--split", "data", {"evaluate_priors": "val", "import": None}, type=str,
         help="split list whose (image, class) pairs are used (PASCAL/COCO: val = test); the import takes several, "
              "all of the benchmark's when left out"),
    flag("--splitpath", "data", ("train", "test", "cam", "evaluate_priors", "import", "prepare"), type=str,
         default=None, help="folder holding pascal/, coco/ and fss/ split lists in HSNet's data/splits layout "
                            "(default: fetched once from HSNet's repository into <repo>/.cache/splits, SHA-256 "
                            "checked)"),
    flag("--traincampath", "data", ("train", "test", "cam"), type=str, default=None,
         help="folder of the training images' CAMs ({name}--{class}.pt; the CAM job writes them there); default "
              "<datapath>/CAM_Train (PASCAL), <datapath>/CAM_COCO (COCO) or <datapath>/CAM_FSS (FSS-1000); COCO and "
              "FSS-1000 use one folder for both"),
    flag("--valcampath", "data", ("train", "test", "cam"), type=str, default=None,
         help="folder of the validation/test images' CAMs; default <datapath>/CAM_Val (PASCAL) or the COCO / "
              "FSS-1000 CAM folder"),
    flag("--img-size", "data", {"train": IMG_SIZE, "test": IMG_SIZE, "predict": IMG_SIZE, "demo": 96,
                                "pretrain": Given("img_size")},
         minimum=32, type=int, help="square input side in pixels (the model's CAM priors are img_size/8 a side)"),
    flag("--cam-size", "data", ("cam", "evaluate_priors", "import"), minimum=1, type=int, default=CAM_SIZE,
         help=f"side of the CAM priors: img_size / 8 ({CAM_SIZE} for the released {IMG_SIZE} px); the model's loader "
              f"resizes other sizes"),
    flag("--nepisodes", "data", {"train": None, "test": None, "demo": 100}, minimum=1, type=int,
         help="episodes per validation/test pass, the first N of the released sequence (train.py / test.py when "
              "left out: the released count: 1000 on PASCAL-5i / COCO-20i, every image of the split once on "
              "FSS-1000, as HSNet: 2400)"),
    flag("--nworker", "data", {"train": 8, "test": 8, "cam": 2, "demo": 2, "prepare": 4}, minimum=0, type=int,
         help="worker processes loading the data (python -m data.prepare: building COCO masks; 0: none)"),
    flag("--strict-masks", "data", ("train", "test"), action="store_true",
         help="stop at a mask value outside the class range (default: read it as background, as the released loaders "
              "do, with one warning per file and a count at the end)"),
    flag("--bsz", "data", {"train": 40, "test": 10, "cam": 32, "demo": 4, "pretrain": Given("bsz")}, minimum=1, type=int,
         help="episodes (images for the CAM job and the pretraining) per batch; train.py / test.py: global, split "
              "over GPUs / DDP ranks"),
    flag("--images-per-class", "data", {"demo": 12, "pretrain": Given("images_per_class"), "synthetic": 6}, type=int,
         help="synthetic images per class and split (>= 6 for 5-shot episodes)"),
    flag("--max-distractors", "data", ("demo", "pretrain", "synthetic"), type=int,
         choices=Given("distractor_counts"), default=Given("max_distractors"),
         help="at most this many objects of other classes per synthetic image (0: one object per image)"),
]

_MODEL = [
    flag("--backbone", "model", {"train": "resnet50", "test": "resnet50", "predict": "resnet50", "demo": "resnet50",
                                 "pretrain": Given("backbone"), "launch": ["resnet50"]},
         type=str, choices=Given("backbones"), help="feature extractor"),
    flag("--backbone-weights", "model", {"train": "imagenet", "test": "none", "predict": "none", "demo": None},
         type=str, help="initial backbone weights: 'imagenet', 'none' (random), or a torchvision state-dict file; "
                        "a full --load checkpoint holds the backbone, a slim one names the weights it needs (used "
                        "when left out); demo.py, left out: pretrained there, step 3"),
    flag("--stage", "model", ("train", "test", "predict", "demo"), minimum=1, type=int, default=2,
         help="IMR iterations (released: 2 PASCAL, 3 COCO)"),
    flag("--masking", "model", {"train": "released", "test": "released", "predict": "released", "demo": "paper"},
         type=str, choices=Given("maskings"),
         help="feature masking with CAMs: as the released code does it, or as the paper describes (see README)"),
]

_RUN = [
    flag("--logpath", "run", ("train", "test"), type=str, default="",
         help=f"run name: relative names go to {LOG_ROOT}/<name>.log as released (a name already ending in .log is "
              f"not suffixed again); an absolute path is the run folder itself (default: {LOG_ROOT}/_MMDD_HHMMSS.log, "
              f"the start time; test.py: {LOG_ROOT}/_TEST_<run of --load>_MMDD_HHMMSS.log)"),
    flag("--load", "run", {"test": None, "predict": REQUIRED}, type=str,
         help="checkpoint (best_model.pt format); test.py with several folds: a path template holding {fold}, e.g. "
              "logs/pascal_f{fold}.log/best_model.pt"),
    flag("--out", "run", {"evaluate_priors": REQUIRED, "predict": REQUIRED, "import": REQUIRED,
                          "demo": REPO_ROOT / "demo_out", "compare": None},
         type=str, help="output folder, made when missing (compare.py, left out: <repo>/logs/compare_<A>_vs_<B>)"),
    flag("--device", "run", {"train": "auto", "test": "auto", "predict": "auto", "cam": "auto", "demo": "cpu",
                             "pretrain": Given("device")},
         type=str, help="auto (CUDA if present), cpu, cuda or cuda:N"),
    flag("--seed", "run", {"train": None, "test": None, "demo": 0, "pretrain": Given("seed"), "synthetic": 0},
         type=int, help="random seed of the data, weights and episode draws: same seed, same result (train.py when "
                        "left out: drawn at random, as released, and saved with the run)"),
    flag("--amp", "run", ("train", "test", "cam"), nargs="?", const="fp16", default=False, choices=AMP_CHOICES,
         help="autocast on CUDA: fp16 (float16 with a GradScaler; what --amp alone means) or bf16 (bfloat16, no "
              "scaler)"),
    flag("--compile", "run", ("train", "test"), action="store_true",
         help="torch.compile the 4D-convolution learner (first steps slower while it compiles)"),
    flag("--tf32", "run", ("train", "test", "cam"), action="store_true",
         help="allow TF32 float32 matmuls/convolutions on Ampere+ GPUs: faster, not the released numerics (the "
              "released code ran without TF32)"),
    flag("--bootstrap", "run", ("test", "compare", "launch"), minimum={"test": 0, "compare": 1, "launch": 0}, type=int,
         default=Given("resamples"), metavar="N",
         help="bootstrap resamples of the episodes for the 95%% intervals (compare.py: paired; test.py: 0 for no "
              "intervals)"),
    flag("--lr", "run", {"train": 4e-4, "demo": 1e-3, "pretrain": Given("lr")}, type=float,
         help="learning rate (Adam, as released; the pretraining: AdamW's peak)"),
    flag("--niter", "run", {"train": 400, "demo": 6}, minimum=1, type=int, help="training epochs"),
    flag("--resume", "run", ("train", "test"), action="store_true",
         help="continue the run in --logpath: training from its last.pt; a test run keeps its finished (seed, fold, "
              "shot) cells and runs the others"),
    flag("--no-progress", "run", ("cam", "evaluate_priors", "import"), dest="progress", action="store_false",
         help="no progress bar (on a terminal) or progress lines (otherwise)"),
]

_CLIP = [
    flag("--clip-weights", "clip", ("cam", "predict", "demo"), type=str, default=None,
         help="OpenAI CLIP weights: RN50.pt (predict.py, --prior gradcam-rn50), ViT-B-16.pt (--prior clip-es), "
              "TorchScript or a state dict with its keys (default: that file in ~/.cache/clip, downloaded when "
              "missing and online; demo.py: 'random' from --seed); " + CLIP_RANDOM),
    flag("--precision", "clip", ("cam", "predict"), type=str, choices=Given("precisions"), default="auto",
         help="CLIP's precision for the CAM priors: fp16 (CLIP's float16 weights, as OpenAI's clip.load(jit=False) "
              "keeps them on a GPU: how the authors' CAM files were made), fp32 (the released scripts' numbers on a "
              "CPU), auto: fp16 on CUDA, fp32 on the CPU (the CAM job: fp32 with --amp; its manifest says which)"),
]

FLAGS: dict[str, Flag] = {f.name: f for f in _DATA + _MODEL + _RUN + _CLIP}

# Where a flag means something else in one script: (flag, script) -> (why, the keywords replacing the declaration's).
EXCEPTIONS: dict[tuple[str, str], tuple[str, Mapping[str, Any]]] = {
    ("--datapath", "prepare"): ("the root to fill, a Path, no default", {
        "type": Path, "required": True, "help": "root to fill (VOC2012/, COCO2014/ or FSS-1000/)"}),
    ("--splitpath", "prepare"): ("a Path, as the other paths of python -m data.prepare", {"type": Path}),
    ("--out", "demo"): ("a Path, as the other paths of demo.py", {"type": Path}),
    ("--benchmark", "synthetic"): ("several layouts in one call", {
        "nargs": "+", "default": Given("all_benchmarks"), "help": "which layouts to write"}),
    ("--fold", "test"): ("several folds in one call (args.folds), one checkpoint each", {
        "dest": "folds", "nargs": "+", "default": [0], "metavar": "FOLD",
        "help": "cross-validation fold(s) of PASCAL-5i / COCO-20i (FSS-1000 has none: leave it out); several (e.g. "
                "0 1 2 3) need a --load template holding {fold}"}),
    ("--fold", "evaluate_priors"): ("any fold number: the dataset checks it", {"choices": None}),
    ("--split", "evaluate_priors"): ("one of HSNet's three lists", {"choices": ("trn", "val", "test")}),
    ("--split", "import"): ("several lists, checked against the benchmark's after parsing", {"nargs": "+"}),
    ("--seed", "test"): ("several seeds in one call (args.seeds), each reported", {
        "aliases": ("--seeds",), "dest": "seeds", "nargs": "+", "default": [0], "metavar": "SEED",
        "help": "episode seed(s) (released: 0); several (e.g. 0 1 2 3 4) run the protocol once per seed and report "
                "each seed's number, their mean and standard deviation"}),
    ("--benchmark", "launch"): ("a grid axis: several benchmarks, a cell each", {
        "nargs": "+", "help": "the grid's benchmarks, a training job each"}),
    ("--backbone", "launch"): ("a grid axis: several backbones, a cell each", {
        "nargs": "+", "help": "the grid's backbones, a training job each"}),
    ("--fold", "launch"): ("a grid axis: several folds, a cell each", {
        "nargs": "+", "help": "the grid's folds, a training job each (and a checkpoint of the test job)"}),
    ("--bootstrap", "launch"): ("passed on to the test job's test.py only when given", {
        "default": None, "help": "test.py --bootstrap of the test job (default: test.py's)"}),
    ("--amp", "cam"): ("the gradcam-rn50 recipe's switch (priors.recipes: refused with another --prior)", {
        "action": "store_true", "nargs": None, "const": None, "default": None, "choices": None,
        "help": "--prior gradcam-rn50: CUDA autocast (float16) for the ResNet trunk"}),
}
assert all(name in FLAGS and script in FLAGS[name].scripts for name, script in EXCEPTIONS), EXCEPTIONS


def declared_options(name: str, script: str) -> dict[str, Any]:
    """``add_argument``'s keywords of the shared flag ``name`` in ``script`` as declared (:class:`Given` values
    left in; ``aliases``: more option strings; a keyword set to None in :data:`EXCEPTIONS` is left out).

    Raises:
        KeyError: ``name`` is not a shared flag, or ``script`` does not take it (declare it above first).
    """
    declared = FLAGS[name]
    if script not in declared.scripts:
        raise KeyError(f"{name} is not declared for {script!r} in common/flags.py (it has: "
                       f"{', '.join(declared.scripts)})")
    options = dict(declared.options)
    if script in declared.defaults:
        default = declared.defaults[script]
        options.update({"required": True} if default is REQUIRED else {"default": default})
    options.update(EXCEPTIONS.get((name, script), ("", {}))[1])
    return {key: value for key, value in options.items() if value is not None}  # None: argparse's own


def flag_options(name: str, script: str, **given: Any) -> dict[str, Any]:
    """:func:`declared_options` with the :class:`Given` values filled from ``given``.

    Raises:
        KeyError: as :func:`declared_options`.
        TypeError: a value the declaration leaves to the caller is not in ``given``.
    """
    options = declared_options(name, script)
    for key, value in options.items():
        if isinstance(value, Given):
            if value.name not in given:
                raise TypeError(f"{name} in {script!r}: pass {value.name}= (its {key})")
            options[key] = given[value.name]
    return options


def add_flags(container: argparse._ActionsContainer, script: str, *names: str, **given: Any) -> None:
    """Add the shared flags ``names`` to ``container`` (a parser or one of its argument groups) as ``script``
    declares them; ``given``: the values the declarations leave to the caller (:class:`Given`)."""
    for name in names:
        options = flag_options(name, script, **given)
        container.add_argument(name, *options.pop("aliases", ()), **options)


def check_minimums(parser: argparse.ArgumentParser, args: argparse.Namespace, script: str, *, got: bool = True) -> None:
    """``parser.error`` for the first shared flag of ``script`` whose parsed value (None: left out) is under its
    declared ``minimum``: ``argument --bsz: must be >= 1`` (``got``: with ``, got 0``, as train.py and test.py)."""
    for flag in FLAGS.values():
        least = flag.minimum.get(script) if isinstance(flag.minimum, Mapping) else flag.minimum
        value = getattr(args, flag.name[2:].replace("-", "_"), None) if script in flag.scripts else None
        if least is not None and value is not None and value < least:
            parser.error(f"argument {flag.name}: must be >= {least}" + (f", got {value}" if got else ""))
