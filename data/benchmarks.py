"""Each benchmark described once: a :class:`BenchmarkSpec` per benchmark in :data:`BENCHMARK_SPECS` (as the
backbone registry of ``model/backbone.py``): names, folds, classes and class names, HSNet's split files with
their SHA-256, default CAM folders, the released number of validation/test episodes, where its images are and
which (image, class) pairs get a CAM prior, and its episode dataset.

The module-level names below (:data:`BENCHMARKS`, :data:`NCLASS`, :data:`TITLES`, ...) are views of the specs,
kept for the code that reads one fact. A new benchmark is a dataset module (``data/<name>.py``: a
:class:`~data.fewshot.FewShotDataset` and its CAM pairs) and its spec here; :func:`register_benchmark` adds one
from outside (docs/extending.md).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

from common.views import LiveMapping

NFOLDS = 4  # cross-validation folds of PASCAL-5i and COCO-20i

# Class names exactly as the released generate_cam_voc.py / generate_cam_coco.py spell them in their prompts.
PASCAL_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")

# (official category id, name, supercategory) of the 80 COCO 2014 categories, in id order; the class index
# of HSNet and of the CAM files is the position in this tuple.
COCO_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"), (4, "motorcycle", "vehicle"),
    (5, "airplane", "vehicle"), (6, "bus", "vehicle"), (7, "train", "vehicle"), (8, "truck", "vehicle"),
    (9, "boat", "vehicle"), (10, "traffic light", "outdoor"), (11, "fire hydrant", "outdoor"),
    (13, "stop sign", "outdoor"), (14, "parking meter", "outdoor"), (15, "bench", "outdoor"),
    (16, "bird", "animal"), (17, "cat", "animal"), (18, "dog", "animal"), (19, "horse", "animal"),
    (20, "sheep", "animal"), (21, "cow", "animal"), (22, "elephant", "animal"), (23, "bear", "animal"),
    (24, "zebra", "animal"), (25, "giraffe", "animal"), (27, "backpack", "accessory"),
    (28, "umbrella", "accessory"), (31, "handbag", "accessory"), (32, "tie", "accessory"),
    (33, "suitcase", "accessory"), (34, "frisbee", "sports"), (35, "skis", "sports"),
    (36, "snowboard", "sports"), (37, "sports ball", "sports"), (38, "kite", "sports"),
    (39, "baseball bat", "sports"), (40, "baseball glove", "sports"), (41, "skateboard", "sports"),
    (42, "surfboard", "sports"), (43, "tennis racket", "sports"), (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"), (47, "cup", "kitchen"), (48, "fork", "kitchen"), (49, "knife", "kitchen"),
    (50, "spoon", "kitchen"), (51, "bowl", "kitchen"), (52, "banana", "food"), (53, "apple", "food"),
    (54, "sandwich", "food"), (55, "orange", "food"), (56, "broccoli", "food"), (57, "carrot", "food"),
    (58, "hot dog", "food"), (59, "pizza", "food"), (60, "donut", "food"), (61, "cake", "food"),
    (62, "chair", "furniture"), (63, "couch", "furniture"), (64, "potted plant", "furniture"),
    (65, "bed", "furniture"), (67, "dining table", "furniture"), (70, "toilet", "furniture"),
    (72, "tv", "electronic"), (73, "laptop", "electronic"), (74, "mouse", "electronic"),
    (75, "remote", "electronic"), (76, "keyboard", "electronic"), (77, "cell phone", "electronic"),
    (78, "microwave", "appliance"), (79, "oven", "appliance"), (80, "toaster", "appliance"),
    (81, "sink", "appliance"), (82, "refrigerator", "appliance"), (84, "book", "indoor"),
    (85, "clock", "indoor"), (86, "vase", "indoor"), (87, "scissors", "indoor"), (88, "teddy bear", "indoor"),
    (89, "hair drier", "indoor"), (90, "toothbrush", "indoor"),
)
COCO_CLASSES: tuple[str, ...] = tuple(name for _, name, _ in COCO_CATEGORIES)  # the released prompt names

# FSS-1000 (HSNet's protocol): fixed trn/val/test class lists, no folds. A class's id is its index in the
# sorted list of its split plus the split's offset, so trn is 0..519, val 520..759, test 760..999.
FSS_SPLIT_CLASSES: dict[str, int] = {"trn": 520, "val": 240, "test": 240}
FSS_CLASS_OFFSET: dict[str, int] = {"trn": 0, "val": FSS_SPLIT_CLASSES["trn"],
                                    "test": FSS_SPLIT_CLASSES["trn"] + FSS_SPLIT_CLASSES["val"]}
# Images of an FSS-1000 class: <datapath>/FSS-1000/<class>/{1..10}.jpg with masks {1..10}.png. HSNet's sampler
# draws the support file names from 1..10 whatever the folder holds.
FSS_DIR = "FSS-1000"
FSS_IMAGES_PER_CLASS = 10


class CamPairSpec(NamedTuple):
    """One (image, class) pair a benchmark's CAM job computes: ``image`` (the file, relative to the CAM job's
    image folder), ``prompt`` (the class's position in the prompt list), saved as ``{name}--{class_id}.pt`` in
    CAM folder ``folder`` (0: the training folder, 1: the validation folder; one folder when they are equal);
    ``split``: the split list that names it (``python -m data.priors import --split``)."""

    folder: int
    image: str
    prompt: int
    name: str
    class_id: int
    split: str


def _resolve(target: Any) -> Any:
    """``"module:name"`` imported (on first use, so that reading the specs stays light), anything else as is."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class BenchmarkSpec:
    """Everything the code knows of one benchmark.

    Attributes:
        name: the ``--benchmark`` value; title: as papers name it.
        nclass: the number of classes (class ids 0..nclass-1).
        class_names: the prompt names in class-id order, as the released CAM scripts spell them; None when read
            from the split lists at run time (:attr:`prompt_names`).
        nfolds: cross-validation folds (0: fixed class lists, ``--fold`` must be 0).
        eval_episodes: validation/test episodes of a released pass (None: every image of the split once).
        cam_dirs: default (training, validation) CAM folders under ``--datapath`` (equal: one folder, ``--campath``).
        cam_script: the script that writes its CAM folders (``python -m priors.cam_job NAME`` when None).
        image_dir: the CAM job's image folder under ``--datapath`` (``--imgpath``'s default).
        split_files: HSNet's split files (path under the split root) -> SHA-256, fetched and checked by
            :mod:`data.splits`.
        dataset: its :class:`~data.fewshot.FewShotDataset` subclass, or ``"module:Class"`` (imported on first use).
        cam_pairs: ``(image_root, split_root, splits=None) -> list[CamPairSpec]`` (or ``"module:function"``):
            every pair its CAM job computes, in job order (``splits``: of those split lists only).
        prompts: ``split_root -> class names`` in prompt order (or ``"module:function"``), when ``class_names``
            is None.
        fold_classes: ``fold -> test class ids`` (benchmarks with folds).
        cam_job_help: the CAM script's ``--help`` texts (``description``, ``imgpath``, ``campath``).
    """

    name: str
    title: str
    nclass: int
    class_names: Optional[tuple[str, ...]]
    nfolds: int
    eval_episodes: Optional[int]
    cam_dirs: tuple[str, str]
    cam_script: Optional[str]
    image_dir: str
    split_files: Mapping[str, str]
    dataset: Union[str, type]
    cam_pairs: Union[str, Callable[..., list[CamPairSpec]]]
    prompts: Union[str, Callable[[Union[str, Path]], Sequence[str]], None] = None
    fold_classes: Optional[Callable[[int], list[int]]] = None
    cam_job_help: Mapping[str, str] = field(default_factory=dict)

    @property
    def has_folds(self) -> bool:
        """Whether ``--fold`` selects a cross-validation fold."""
        return self.nfolds > 0

    @property
    def one_cam_folder(self) -> bool:
        """Whether training and validation read one CAM folder (``--campath``)."""
        return self.cam_dirs[0] == self.cam_dirs[1]

    def dataset_class(self) -> Any:
        """Its :class:`~data.fewshot.FewShotDataset` subclass."""
        return _resolve(self.dataset)

    def list_cam_pairs(self, image_root: Path, split_root: Path,
                       splits: Optional[Sequence[str]] = None) -> list[CamPairSpec]:
        """Every (image, class) pair its CAM job computes (``splits``: of those split lists only)."""
        return _resolve(self.cam_pairs)(Path(image_root), Path(split_root), splits=splits)

    def prompt_names(self, split_root: Union[str, Path]) -> Sequence[str]:
        """The class names its priors are made for, in prompt order (what a CAM manifest's
        ``class_names_sha256`` hashes)."""
        return self.class_names if self.class_names is not None else _resolve(self.prompts)(split_root)


_RECIPE = ("(the released CLIP RN50 Grad-CAM by default, CLIP-ES with --prior clip-es; batched, deduplicated across "
           "folds, resumable)")

BENCHMARK_SPECS: dict[str, BenchmarkSpec] = {spec.name: spec for spec in (
    BenchmarkSpec(
        name="pascal", title="PASCAL-5i", nclass=20, class_names=PASCAL_CLASSES, nfolds=NFOLDS, eval_episodes=1000,
        cam_dirs=("CAM_Train", "CAM_Val"),  # the released train.py defaults
        cam_script="generate_cam_voc.py", image_dir="VOC2012/JPEGImages",
        split_files={
        "pascal/trn/fold0.txt": "40fded8be6afbc4b70953277f2a178af8055cddd4e73fb4646b7bf19704b9da2",
        "pascal/trn/fold1.txt": "558167c3c6fea0cda1bb7c7a275e66d5de7bc13cbc97e00c5872ac84d5f0954e",
        "pascal/trn/fold2.txt": "d07e35f4a4ae95774c619bafb57d65d682dbd5b9f33c7f71a4f5cef8e3f99609",
        "pascal/trn/fold3.txt": "ffe09100c0c4d9c19d074a33b0f29fe5a89a730579ba39a9f9e908186298ac17",
        "pascal/val/fold0.txt": "748e2f4732ac502cb3aa1f3768936b394bd7ba4e611ac5bf959291a268e249df",
        "pascal/val/fold1.txt": "afce1929e4dacbc13c07f9a26d4ce7738d415e1b18443fe173e58303836f5c14",
        "pascal/val/fold2.txt": "50b1f5218e8f882ca65d85da5be230b978a70067e9b3e0e9fca1528f546bd7fb",
        "pascal/val/fold3.txt": "c3825d7c52d1608d4c62c5b85d6ef3f74cf5898032bc068a94c971df17bdf71a",
        },
        dataset="data.pascal:DatasetPASCAL", cam_pairs="data.pascal:cam_pairs",
        fold_classes=lambda fold: [fold * 5 + i for i in range(5)],  # five consecutive classes
        cam_job_help={"description": f"CAM priors for every (image, class) pair of PASCAL-5i {_RECIPE}",
                      "imgpath": "PASCAL images"}),
    BenchmarkSpec(
        name="coco", title="COCO-20i", nclass=80, class_names=COCO_CLASSES, nfolds=NFOLDS, eval_episodes=1000,
        cam_dirs=("CAM_COCO", "CAM_COCO"),  # one folder for both splits, as the released COCO dataset requires
        cam_script="generate_cam_coco.py", image_dir="COCO2014",
        split_files={
        "coco/trn/fold0.pkl": "5a94e113d8c150a7e20723360dd9779eaa1305ccddc28dff4501e29ed3df5c45",
        "coco/trn/fold1.pkl": "69629cdd84fd57b3bb4e281b5bf65440f7ecf9b62eb119f1d8d7fe78b0fb02a8",
        "coco/trn/fold2.pkl": "594adc4b8ebecf9b8b559284f334ff3dd3fa3c150317cbc6ce7917ce81a08c03",
        "coco/trn/fold3.pkl": "07b38ccc9e15ebfd1ab6288eeaad3a5f289bbba3419807212169fd44b89cc5c5",
        "coco/val/fold0.pkl": "96002389be83b4730d13b814398f54eb2baf5c3283598ec2288d60624d6ef9c3",
        "coco/val/fold1.pkl": "a34deecdf2858fc436f5ea4d5a2d46b6674ce09f7ebce41c34b694116381fa56",
        "coco/val/fold2.pkl": "0f275c5e9bf538f6ef8a95054f6daf2519b53785c4ab7fd07e633dda57dac1e5",
        "coco/val/fold3.pkl": "927597bd78036a460abdab243330667af6ceffdb483bc3331ae55d148f00c449",
        },
        dataset="data.coco:DatasetCOCO", cam_pairs="data.coco:cam_pairs",
        fold_classes=lambda fold: [fold + NFOLDS * i for i in range(20)],  # every fourth class
        cam_job_help={"description": f"CAM priors for every (image, class) pair of COCO-20i {_RECIPE}",
                      "imgpath": "COCO root holding train2014/ and val2014/",
                      "campath": "output folder, with train2014/ and val2014/ subfolders"}),
    BenchmarkSpec(
        # HSNet's protocol; None: every test image once (240 classes x 10 images = 2400 episodes)
        name="fss", title="FSS-1000", nclass=1000, class_names=None, nfolds=0, eval_episodes=None,
        cam_dirs=("CAM_FSS", "CAM_FSS"), cam_script="generate_cam_fss.py", image_dir=FSS_DIR,
        split_files={
        "fss/test.txt": "26f1b9e9dd0c4a58c01db306aeb5bccb5de361d544ec1b15f219efc4b74c0bf1",
        "fss/trn.txt": "815bce03f2502719ba3bd9c1f79111b74ec8ab63e6111830ff7312de49b1cf17",
        "fss/val.txt": "9cac02c58602f2789b4e6393200e450e3ba1edae6673d6a87ae2063d0c547aee",
        },
        dataset="data.fss:DatasetFSS", cam_pairs="data.fss:cam_pairs", prompts="data.fss:fss_prompts",
        cam_job_help={
            "description": "CAM priors of every FSS-1000 image for its own class (the released CLIP RN50 Grad-CAM "
                           "recipe by default, CLIP-ES with --prior clip-es; prompts over all 1000 class names with "
                           "underscores as spaces; batched, resumable)",
            "imgpath": "FSS-1000 root holding one folder per class",
            "campath": "output folder, with one subfolder per class"}),
)}


def _per_benchmark(value: Callable[[BenchmarkSpec], Any], keep: Callable[[BenchmarkSpec], bool] = lambda spec: True,
                   keys_repr: bool = False) -> Mapping[str, Any]:
    return LiveMapping(lambda: {name: value(spec) for name, spec in BENCHMARK_SPECS.items() if keep(spec)},
                       keys_repr=keys_repr)


# Views of the specs, one fact each: they follow the registry (register_benchmark, or a test's monkeypatch).
# The names (a read-only collection: `in`, iteration, len; its repr is a tuple's)
BENCHMARKS: Mapping[str, BenchmarkSpec] = _per_benchmark(lambda spec: spec, keys_repr=True)
FOLD_BENCHMARKS: Mapping[str, BenchmarkSpec] = _per_benchmark(lambda spec: spec, lambda spec: spec.has_folds,
                                                              keys_repr=True)  # FSS-1000 has fixed class splits
NCLASS: Mapping[str, int] = _per_benchmark(lambda spec: spec.nclass)
TITLES: Mapping[str, str] = _per_benchmark(lambda spec: spec.title)  # as papers name them
EVAL_EPISODES: Mapping[str, Optional[int]] = _per_benchmark(lambda spec: spec.eval_episodes)
DEFAULT_CAM_DIRS: Mapping[str, tuple[str, str]] = _per_benchmark(lambda spec: spec.cam_dirs)
CAM_SCRIPTS: Mapping[str, str] = _per_benchmark(lambda spec: spec.cam_script or f"-m priors.cam_job {spec.name}")
# FSS-1000's class names come from HSNet's split lists at run time (data.fss)
CLASS_NAMES: Mapping[str, tuple[str, ...]] = _per_benchmark(lambda spec: spec.class_names,
                                                            keep=lambda spec: spec.class_names is not None)
# every benchmark's split files (data.splits fetches and checks them)
SPLIT_SHA256: Mapping[str, str] = LiveMapping(lambda: {rel: sha for spec in BENCHMARK_SPECS.values()
                                                 for rel, sha in spec.split_files.items()})


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Add ``spec`` (a benchmark defined outside this module: a test, a plug-in); every view follows.

    Raises:
        ValueError: the name is taken.
    """
    if spec.name in BENCHMARK_SPECS:
        raise ValueError(f"benchmark {spec.name!r} is already registered")
    BENCHMARK_SPECS[spec.name] = spec
    return spec


def fold_classes(benchmark: str, fold: int) -> list[int]:
    """The 0-based test classes of ``fold``, as HSNet splits them.

    PASCAL-5i: fold f holds the five consecutive classes 5f..5f+4; COCO-20i: the 20 classes f, f+4, ..., f+76.
    The training classes of a fold are all the others.
    """
    if benchmark not in FOLD_BENCHMARKS:
        raise ValueError(f"benchmark must be one of {tuple(FOLD_BENCHMARKS)} (FSS-1000 has no folds), got "
                         f"{benchmark!r}")
    spec = BENCHMARK_SPECS[benchmark]
    if not 0 <= fold < spec.nfolds:
        raise ValueError(f"fold must be in 0..{spec.nfolds - 1}, got {fold}")
    return spec.fold_classes(fold)
