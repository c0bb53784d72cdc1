"""The command-line flags that more than one script takes, each declared here once (timm's ``train.py`` habit,
with one table instead of copies).

A :class:`Flag` is a name, its group (``data``, ``model``, ``run``, ``clip``) and, per script that takes it, the
``add_argument`` keywords it has there: what every script shares is written once (``flag(..., type=int)``), what
genuinely differs per script (``--bsz`` is 40 episodes in train.py, 10 in test.py, 32 images in the CAM job) is
written beside the script's name, here and nowhere else. A script asks for its flags by name, in the order its
``--help`` lists them, and puts them in its own argument group::

    add_flags(group, "train", "--datapath", "--benchmark", benchmarks=BENCHMARKS)

Values that live above ``common/`` (the benchmark names, the backbone names, a config's defaults) are
:class:`Given`: the caller passes them by keyword, so this module imports nothing but ``common``. A flag of one
script only is declared in that script's parser. ``tests/test_flags.py`` builds every parser of the repository
and checks each shared flag against its declaration here, and that no flag is declared twice.

Scripts (:data:`SCRIPTS`): ``train`` / ``test`` (train.py, test.py), ``cam`` (generate_cam_{voc,coco,fss}.py),
``evaluate_priors``, ``predict``, ``demo``, ``compare``, ``pretrain`` (python -m apps.pretrain), ``import``
(python -m data.priors import), ``prepare`` (python -m data.prepare), ``synthetic`` (python -m data.synthetic).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from common.constants import CAM_SIZE, IMG_SIZE
from common.paths import DEFAULT_DATAPATH, LOG_ROOT, REPO_ROOT

__all__ = ["FLAGS", "GROUPS", "SCRIPTS", "Flag", "Given", "add_flags", "flag_options"]

SCRIPTS = {
    "train": "train.py", "test": "test.py", "cam": "generate_cam_{voc,coco,fss}.py",
    "evaluate_priors": "evaluate_priors.py", "predict": "predict.py", "demo": "demo.py", "compare": "compare.py",
    "pretrain": "python -m apps.pretrain", "import": "python -m data.priors import",
    "prepare": "python -m data.prepare", "synthetic": "python -m data.synthetic",
}
GROUPS = ("data", "model", "run", "clip")


@dataclass(frozen=True)
class Given:
    """A keyword value the caller of :func:`add_flags` passes under ``name`` (it lives above ``common/``);
    ``template`` formats it into a text (``"{} (default: ...)"``)."""

    name: str
    template: str = "{}"


@dataclass(frozen=True)
class Flag:
    """One flag of several scripts: ``scripts`` maps each script that takes it to its ``add_argument`` keywords
    there (``aliases``: more option strings after ``name``)."""

    name: str
    group: str
    scripts: Mapping[str, Mapping[str, Any]]


def flag(name: str, group: str, scripts: Mapping[str, Mapping[str, Any]], **shared: Any) -> Flag:
    """The flag ``name``: ``shared`` keywords in every script, each script's own on top of them."""
    assert group in GROUPS and set(scripts) <= set(SCRIPTS), (name, group, set(scripts) - set(SCRIPTS))
    return Flag(name, group, {script: {**shared, **own} for script, own in scripts.items()})


def same(*scripts: str, **options: Any) -> dict[str, dict[str, Any]]:
    """The same keywords in each of ``scripts`` (for a flag's ``scripts`` table)."""
    return {script: dict(options) for script in scripts}


DATAPATH_HELP = "(default: " + str(DEFAULT_DATAPATH).replace("{", "{{").replace("}", "}}") + ")"  # a template
SPLITPATH_HELP = ("folder holding pascal/, coco/ and fss/ split lists in HSNet's data/splits layout (default: fetched "
                  "once from HSNet's repository into <repo>/.cache/splits, SHA-256 checked)")
SPLIT_CACHE_HELP = "folder holding HSNet's split lists (default: fetched once into <repo>/.cache/splits)"
BACKBONE_WEIGHTS_HELP = "initial backbone weights: 'imagenet', 'none' (random), or a torchvision state-dict file"
AMP_CHOICES = ("fp16", "bf16")

_DATA = [
    flag("--datapath", "data", type=str, default=None, scripts={
        **same("train", "test", help=f"root holding VOC2012/, COCO2014/ and FSS-1000/ (default: {DEFAULT_DATAPATH})"),
        "cam": {"help": Given("datapath_help", "{} " + DATAPATH_HELP)},  # the CAM job's text of the benchmark
        "evaluate_priors": {"help": f"root of the images and masks (default: {DEFAULT_DATAPATH})"},
        "import": {"help": f"root of the images (default: {DEFAULT_DATAPATH})"},
        "prepare": {"type": Path, "required": True, "help": "root to fill (VOC2012/, COCO2014/ or FSS-1000/)"},
    }),
    flag("--benchmark", "data", type=str, choices=Given("benchmarks"), scripts={
        **same("train", "test", default="pascal", help="few-shot benchmark"),
        "evaluate_priors": {"default": "pascal", "help": "whose split lists and masks"},
        "import": {"required": True, "help": "whose split lists name the pairs"},
        "pretrain": {"choices": Given("fold_benchmarks"), "default": Given("benchmark")},
        "synthetic": {"nargs": "+", "default": Given("all_benchmarks"), "help": "which layouts to write"},
    }),
    flag("--fold", "data", type=int, choices=Given("folds"), scripts={
        "train": {"default": 0, "help": "cross-validation fold of PASCAL-5i / COCO-20i (FSS-1000 has none: leave it "
                                        "out)"},
        "test": {"dest": "folds", "nargs": "+", "default": [0], "metavar": "FOLD",
                 "help": "cross-validation fold(s) of PASCAL-5i / COCO-20i (FSS-1000 has none: leave it out); several "
                         "(e.g. 0 1 2 3) need a --load template holding {fold}"},
        "evaluate_priors": {"choices": None, "default": 0, "help": "fold (0 for FSS-1000)"},
        "pretrain": {"default": Given("fold"), "help": "its test classes are never drawn"},
    }),
    flag("--split", "data", type=str, scripts={
        "evaluate_priors": {"choices": ("trn", "val", "test"), "default": "val",
                            "help": "split list whose (image, class) pairs are scored (PASCAL/COCO: val = test)"},
        "import": {"nargs": "+", "default": None, "help": Given("splits", "split lists whose pairs to import "
                                                                         "(default: all: {})")},
    }),
    flag("--splitpath", "data", type=str, default=None, scripts={
        **same("train", "test", "cam", help=SPLITPATH_HELP),
        **same("evaluate_priors", "import", help=SPLIT_CACHE_HELP),
        "prepare": {"type": Path, "help": "fss: a local copy of HSNet's data/splits (default: the verified cache, "
                                          "fetched once)"},
    }),
    flag("--traincampath", "data", type=str, default=None, scripts={
        **same("train", "test", help="folder of the training images' CAMs ({name}--{class}.pt); default "
                                     "<datapath>/CAM_Train (PASCAL), <datapath>/CAM_COCO (COCO) or <datapath>/CAM_FSS "
                                     "(FSS-1000); COCO and FSS-1000 use one folder for both"),
        "cam": {"help": Given("train_cam_dir", "output folder of the training pairs' CAMs (default: "
                                               "<datapath>/{})")},
    }),
    flag("--valcampath", "data", type=str, default=None, scripts={
        **same("train", "test", help="folder of the validation/test images' CAMs; default <datapath>/CAM_Val "
                                     "(PASCAL) or the COCO / FSS-1000 CAM folder"),
        "cam": {"help": Given("val_cam_dir", "output folder of the validation pairs' CAMs (default: <datapath>/{})")},
    }),
    flag("--img-size", "data", type=int, scripts={
        **same("train", "test", "predict", default=IMG_SIZE, help="square input side (CAMs are img_size/8 a side)"),
        "demo": {"default": 96, "help": "input side for training and testing"},
        "pretrain": {"default": Given("img_size"), "help": "input side (as the few-shot runs)"},
    }),
    flag("--cam-size", "data", type=int, default=CAM_SIZE, scripts={
        "cam": {"help": "side of the saved CAMs"},
        "evaluate_priors": {"help": "side the model reads the priors at (img_size / 8); other sizes are resized as "
                                    "the loader does"},
        "import": {"help": f"side of the saved maps (img_size / 8: {CAM_SIZE} for the released {IMG_SIZE} px)"},
    }),
    flag("--nepisodes", "data", type=int, scripts={
        **same("train", "test", default=None,
               help="episodes per validation/test pass, the first N of the released sequence (default: the released "
                    "count: 1000 on PASCAL-5i / COCO-20i, every image of the split once on FSS-1000, as HSNet: 2400)"),
        "demo": {"default": 100, "help": "test episodes (1-shot and 5-shot)"},
    }),
    flag("--nworker", "data", type=int, scripts={
        **same("train", "test", default=8, help="data-loader worker processes"),
        "cam": {"default": 2, "help": "image-decoding worker processes (0: none)"},
        "demo": {"default": 2, "help": "data-loader workers"},
        "prepare": {"default": 4, "help": "processes building COCO masks (0: none)"},
    }),
    flag("--strict-masks", "data", action="store_true", scripts=same("train", "test"),
         help="stop at a mask value outside the class range (default: read it as background, as the released loaders "
             "do, with one warning per file and a count at the end)"),
    flag("--bsz", "data", type=int, scripts={
        "train": {"default": 40, "help": "episodes per batch (global: split over GPUs / DDP ranks)"},
        "test": {"default": 10, "help": "episodes per batch (global: split over GPUs / DDP ranks)"},
        "cam": {"default": 32, "help": "images per forward/backward pass"},
        "demo": {"default": 4, "help": "training episodes per batch"},
        "pretrain": {"default": Given("bsz")},
    }),
    flag("--images-per-class", "data", type=int, scripts={
        "demo": {"default": 12, "help": "synthetic images per class and split"},
        "pretrain": {"default": Given("images_per_class")},
        "synthetic": {"default": 6, "help": "images per class in each of trn and val (>= 6 for 5-shot episodes)"},
    }),
    flag("--max-distractors", "data", type=int, choices=Given("distractor_counts"), scripts={
        "demo": {"default": Given("max_distractors"),
                 "help": "objects of other classes per synthetic image, at most (the benchmark's default)"},
        "pretrain": {"default": Given("max_distractors"), "help": "objects of other training classes per image, at most"},
        "synthetic": {"default": Given("max_distractors"),
                      "help": "at most this many objects of other classes per image (0: one object per image)"},
    }),
]

_MODEL = [
    flag("--backbone", "model", type=str, choices=Given("backbones"), scripts={
        **same("train", "test", "predict", "demo", default="resnet50", help="feature extractor"),
        "pretrain": {"default": Given("backbone")},
    }),
    flag("--backbone-weights", "model", type=str, scripts={
        "train": {"default": "imagenet", "help": BACKBONE_WEIGHTS_HELP},
        "test": {"default": "none", "help": BACKBONE_WEIGHTS_HELP + " (test: a full --load checkpoint holds the "
                                                                    "backbone; a slim one names the weights it needs, "
                                                                    "used by default)"},
        "predict": {"default": "none", "help": BACKBONE_WEIGHTS_HELP + " (the --load checkpoint holds the backbone)"},
        "demo": {"default": None,
                 "help": "torchvision state-dict file of the backbone (default: pretrained here, step 3)"},
    }),
    flag("--stage", "model", type=int, default=2, scripts={
        **same("train", "test", "predict", help="IMR iterations (released: 2 PASCAL, 3 COCO)"),
        "demo": {"help": "IMR refinement stages"},
    }),
    flag("--masking", "model", type=str, choices=Given("maskings"), scripts={
        **same("train", "test", "predict", default="released",
               help="feature masking with CAMs: as the released code does it, or as the paper describes"),
        "demo": {"default": "paper", "help": "IMR feature masking (see README: the demo uses the paper's)"},
    }),
]

_RUN = [
    flag("--logpath", "run", type=str, default="", scripts={
        "train": {"help": f"run name: relative names go to {LOG_ROOT}/<name>.log as released (a name already ending "
                          f"in .log is not suffixed again); an absolute path is the run folder itself (default: "
                          f"{LOG_ROOT}/_MMDD_HHMMSS.log, the start time)"},
        "test": {"help": f"run name: relative names go to {LOG_ROOT}/<name>.log as released (a name already ending "
                         f"in .log is not suffixed again); an absolute path is the run folder itself (default: "
                         f"{LOG_ROOT}/_TEST_<run of --load>_MMDD_HHMMSS.log)"},
    }),
    flag("--load", "run", type=str, scripts={
        "test": {"default": None, "help": "checkpoint to test (best_model.pt format); with several folds a path "
                                          "template holding {fold}, e.g. logs/pascal_f{fold}.log/best_model.pt"},
        "predict": {"required": True, "help": "checkpoint (best_model.pt format)"},
    }),
    flag("--out", "run", type=str, scripts={
        "evaluate_priors": {"required": True, "help": "folder for quality.md/.csv/.json and examples.png"},
        "predict": {"required": True, "help": "output folder (created)"},
        "import": {"required": True, "help": "output CAM folder (pass it to train.py/test.py as a CAM path)"},
        "demo": {"type": Path, "default": REPO_ROOT / "demo_out", "help": "output folder"},
        "compare": {"default": None,
                    "help": "folder for compare.md and compare.json (default: <repo>/logs/compare_<A>_vs_<B>)"},
    }),
    flag("--device", "run", type=str, scripts={
        **same("train", "test", "predict", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N"),
        "cam": {"default": "auto", "help": "auto, cpu, cuda or cuda:N"},
        "demo": {"default": "cpu", "help": "auto, cpu, cuda or cuda:N"},
        "pretrain": {"default": Given("device"), "help": "auto, cpu, cuda or cuda:N"},
    }),
    flag("--seed", "run", type=int, scripts={
        "train": {"default": None, "help": "base seed of the per-epoch episode draws (default: drawn at random, as "
                                           "released, and saved with the run)"},
        "test": {"aliases": ("--seeds",), "dest": "seeds", "nargs": "+", "default": [0], "metavar": "SEED",
                 "help": "episode seed(s) (released: 0); several (e.g. 0 1 2 3 4) run the protocol once per seed and "
                         "report each seed's number, their mean and standard deviation"},
        "demo": {"default": 0, "help": "seed of the data, weights and training episodes"},
        "pretrain": {"default": Given("seed"), "help": "seed of the images, init and order"},
        "synthetic": {"default": 0, "help": "random seed; same seed, same bytes"},
    }),
    flag("--amp", "run", scripts={
        **same("train", "test", nargs="?", const="fp16", default=False, choices=AMP_CHOICES,
               help="autocast on CUDA: fp16 (float16 with a GradScaler; what --amp alone means) or bf16 (bfloat16, "
                    "no scaler)"),
        # the gradcam-rn50 recipe's flag (priors.recipes: refused with another --prior)
        "cam": {"action": "store_true", "help": "--prior gradcam-rn50: CUDA autocast (float16) for the ResNet trunk"},
    }),
    flag("--compile", "run", action="store_true", scripts=same("train", "test"),
         help="torch.compile the 4D-convolution learner (first steps slower while it compiles)"),
    flag("--tf32", "run", action="store_true", scripts={
        **same("train", "test", help="allow TF32 float32 matmuls/convolutions on Ampere+ GPUs: faster, not the "
                                     "released numerics (the released code ran without TF32)"),
        "cam": {"help": "allow TF32 float32 convolutions on Ampere+ GPUs (faster; not the released numerics)"},
    }),
    flag("--bootstrap", "run", type=int, default=Given("resamples"), metavar="N", scripts={
        "test": {"help": "bootstrap resamples of the episodes for the 95%% intervals of every number (0: no "
                         "intervals)"},
        "compare": {"help": "paired bootstrap resamples"},
    }),
    flag("--lr", "run", type=float, scripts={
        "train": {"default": 4e-4, "help": "Adam learning rate"},
        "demo": {"default": 1e-3, "help": "Adam learning rate (the released default)"},
        "pretrain": {"default": Given("lr"), "help": "peak AdamW learning rate"},
    }),
    flag("--niter", "run", type=int, scripts={
        "train": {"default": 400, "help": "number of epochs"},
        "demo": {"default": 6, "help": "training epochs"},
    }),
    flag("--resume", "run", action="store_true", scripts={
        "train": {"help": "continue the run in --logpath from its last.pt"},
        "test": {"help": "continue the interrupted test run in --logpath: its finished (seed, fold, shot) cells are "
                         "kept, the others run"},
    }),
    flag("--no-progress", "run", dest="progress", action="store_false", scripts={
        "cam": {"help": "no progress bar (on a terminal) or progress lines (otherwise)"},
        **same("evaluate_priors", "import", help="no progress bar"),
    }),
]

_CLIP = [
    flag("--clip-weights", "clip", type=str, default=None, scripts={
        "cam": {"help": "the recipe's OpenAI CLIP weights: RN50.pt for --prior gradcam-rn50, ViT-B-16.pt for --prior "
                        "clip-es (TorchScript, or a state dict with its keys; default: that file in ~/.cache/clip, "
                        "downloaded when missing and online); 'random' (or 'random:SEED') builds that CLIP from "
                        "random weights to run offline, but its priors then carry NO class information (a file "
                        "named 'random': ./random)"},
        "predict": {"help": "OpenAI CLIP RN50.pt (TorchScript) or a state dict with its keys (default: "
                            "~/.cache/clip/RN50.pt, downloaded when missing and online); 'random' (or 'random:SEED') "
                            "builds RN50 from random weights to run offline, but its priors then carry NO class "
                            "information (a file named 'random': ./random)"},
        "demo": {"help": "OpenAI CLIP RN50.pt (default: 'random', RN50 with random weights from --seed; 'random:SEED' "
                         "for another seed): random priors carry no class information"},
    }),
    flag("--precision", "clip", type=str, choices=Given("precisions"), default="auto", scripts={
        "cam": {"help": "fp16: CLIP's float16 weights, as OpenAI's clip.load(jit=False) keeps them on a GPU (how the "
                        "authors' CAM files were made); fp32: the released scripts' numbers on a CPU; auto: fp16 on "
                        "CUDA, fp32 on the CPU (fp32 with --amp); the manifest records which"},
        "predict": {"help": "CLIP's precision for the CAM priors: auto is fp16 on CUDA (how the authors' CAM files "
                            "were made) and fp32 on the CPU"},
    }),
]

FLAGS: dict[str, Flag] = {f.name: f for f in _DATA + _MODEL + _RUN + _CLIP}


def flag_options(name: str, script: str, **given: Any) -> dict[str, Any]:
    """``add_argument``'s keywords of the shared flag ``name`` in ``script``, the :class:`Given` values filled
    from ``given`` (``aliases`` left in: more option strings).

    Raises:
        KeyError: ``name`` is not a shared flag, or ``script`` does not take it (declare it above first).
        TypeError: a value the declaration leaves to the caller is not in ``given``.
    """
    declared = FLAGS[name].scripts
    if script not in declared:
        raise KeyError(f"{name} is not declared for {script!r} in common/flags.py (it has: {', '.join(declared)})")
    options = {}
    for key, value in declared[script].items():
        if isinstance(value, Given):
            if value.name not in given:
                raise TypeError(f"{name} in {script!r}: pass {value.name}= (its {key})")
            value = value.template.format(given[value.name]) if value.template != "{}" else given[value.name]
        options[key] = value
    return options


def add_flags(container: argparse._ActionsContainer, script: str, *names: str, **given: Any) -> None:
    """Add the shared flags ``names`` to ``container`` (a parser or one of its argument groups) as ``script``
    declares them; ``given``: the values the declarations leave to the caller (:class:`Given`)."""
    for name in names:
        options = flag_options(name, script, **given)
        container.add_argument(name, *options.pop("aliases", ()), **options)
