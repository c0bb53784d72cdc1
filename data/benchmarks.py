"""Facts about the benchmarks, each defined once: names, titles, folds, classes, class names, default CAM
folders, the released number of validation/test episodes.

Every module that needs one of these numbers or names imports it from here (the scripts' flags, the
datasets, the split readers, the CAM job, the synthetic generator, the predictor's vocabularies).
"""
from __future__ import annotations

BENCHMARKS: tuple[str, ...] = ("pascal", "coco", "fss")
NFOLDS = 4  # cross-validation folds of PASCAL-5i and COCO-20i
FOLD_BENCHMARKS: tuple[str, ...] = tuple(b for b in BENCHMARKS if b != "fss")  # FSS-1000 has fixed class splits
NCLASS: dict[str, int] = {"pascal": 20, "coco": 80, "fss": 1000}
TITLES: dict[str, str] = {"pascal": "PASCAL-5i", "coco": "COCO-20i", "fss": "FSS-1000"}  # as papers name them

# FSS-1000 (HSNet's protocol): fixed trn/val/test class lists, no folds. A class's id is its index in the
# sorted list of its split plus the split's offset, so trn is 0..519, val 520..759, test 760..999.
FSS_SPLIT_CLASSES: dict[str, int] = {"trn": 520, "val": 240, "test": 240}
FSS_CLASS_OFFSET: dict[str, int] = {"trn": 0, "val": FSS_SPLIT_CLASSES["trn"],
                                    "test": FSS_SPLIT_CLASSES["trn"] + FSS_SPLIT_CLASSES["val"]}
# Images of an FSS-1000 class: <datapath>/FSS-1000/<class>/{1..10}.jpg with masks {1..10}.png. HSNet's sampler
# draws the support file names from 1..10 whatever the folder holds.
FSS_DIR = "FSS-1000"
FSS_IMAGES_PER_CLASS = 10

# Validation/test episodes per pass when --nepisodes is not given: the released 1000 for PASCAL-5i and COCO-20i;
# None for FSS-1000, where HSNet's dataset length is the number of images of the split (every image is the
# query once: 240 classes x 10 images = 2400 episodes).
EVAL_EPISODES: dict[str, int | None] = {"pascal": 1000, "coco": 1000, "fss": None}

# Default CAM folders under --datapath: the released train.py defaults for PASCAL, the README's name for COCO
# (one folder for both splits, as the released COCO dataset requires), one folder for FSS-1000 as for COCO.
DEFAULT_CAM_DIRS: dict[str, tuple[str, str]] = {"pascal": ("CAM_Train", "CAM_Val"), "coco": ("CAM_COCO", "CAM_COCO"),
                                                "fss": ("CAM_FSS", "CAM_FSS")}
# The script that writes a benchmark's CAM folders.
CAM_SCRIPTS: dict[str, str] = {"pascal": "generate_cam_voc.py", "coco": "generate_cam_coco.py",
                               "fss": "generate_cam_fss.py"}

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
# FSS-1000's class names are not here: they are HSNet's split lists, read at run time (data.fss).
CLASS_NAMES: dict[str, tuple[str, ...]] = {"pascal": PASCAL_CLASSES, "coco": COCO_CLASSES}


def fold_classes(benchmark: str, fold: int) -> list[int]:
    """The 0-based test classes of ``fold``, as HSNet splits them.

    PASCAL-5i: fold f holds the five consecutive classes 5f..5f+4; COCO-20i: the 20 classes f, f+4, ..., f+76.
    The training classes of a fold are all the others.
    """
    if benchmark not in FOLD_BENCHMARKS:
        raise ValueError(f"benchmark must be one of {FOLD_BENCHMARKS} (FSS-1000 has no folds), got {benchmark!r}")
    if not 0 <= fold < NFOLDS:
        raise ValueError(f"fold must be in 0..{NFOLDS - 1}, got {fold}")
    per_fold = NCLASS[benchmark] // NFOLDS
    if benchmark == "pascal":
        return [fold * per_fold + i for i in range(per_fold)]
    return [fold + NFOLDS * i for i in range(per_fold)]
