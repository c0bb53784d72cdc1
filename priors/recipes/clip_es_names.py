"""The words CLIP-ES prompts with (Lin et al., CVPR 2023; github linyq2117/CLIP-ES, ``clip_text.py``).

CLIP-ES renames some classes to help CLIP ("bird" -> "bird avian", "person" -> "person with clothes,people,
human", ...) and adds background categories that the softmax can pick instead of a class ("ground", "sky",
...), with the prompt ``"a clean origami {}."``. The tuples below are CLIP-ES's, in the benchmark's class order
(which for COCO is the category-id order HSNet and our CAM files use). For any other vocabulary (FSS-1000,
your own classes) the class names are used as given and the background list is COCO's, less any name that is
also a class.
"""
from __future__ import annotations

from typing import Optional, Sequence

__all__ = ["CLIP_ES_BACKGROUND", "CLIP_ES_BOX_THRESHOLD", "CLIP_ES_CLASS_NAMES", "CLIP_ES_PROMPT", "LABEL_MODES",
           "clip_es_vocabulary"]

LABEL_MODES = ("all", "image")  # --clip-es-labels: the softmax over all class names, or the image's own labels

CLIP_ES_PROMPT = "a clean origami {}."

CLIP_ES_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "pascal": (
        "aeroplane", "bicycle", "bird avian", "boat", "bottle", "bus", "car", "cat", "chair seat", "cow",
        "diningtable", "dog", "horse", "motorbike", "person with clothes,people,human", "pottedplant", "sheep",
        "sofa", "train", "tvmonitor screen"),
    "coco": (
        "person with clothes,people,human", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck",
        "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird avian", "cat", "dog",
        "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack,bag", "umbrella,parasol",
        "handbag,purse", "necktie", "suitcase", "frisbee", "skis", "sknowboard", "sports ball", "kite",
        "baseball bat", "glove", "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup",
        "fork", "knife", "dessertspoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
        "hot dog", "pizza", "donut", "cake", "chair seat", "sofa", "pottedplant", "bed", "diningtable", "toilet",
        "tvmonitor screen", "laptop", "mouse", "remote control", "keyboard", "cell phone", "microwave", "oven",
        "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
        "hairdrier,blowdrier", "toothbrush"),
}

CLIP_ES_BACKGROUND: dict[str, tuple[str, ...]] = {
    "pascal": ("ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea",
               "railway", "railroad", "keyboard", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock",
               "street", "valley", "bridge", "sign"),
    "coco": ("ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea",
             "railway", "railroad", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock", "street",
             "valley", "bridge"),
}

# The box mask of the affinity refinement keeps the CAM's regions above this share of its maximum:
# generate_cams_voc12.py uses 0.4, generate_cams_coco14.py 0.7.
CLIP_ES_BOX_THRESHOLD: dict[str, float] = {"pascal": 0.4, "coco": 0.7}
DEFAULT_BOX_THRESHOLD = 0.4


def clip_es_vocabulary(class_names: Sequence[str], benchmark: Optional[str] = None
                       ) -> tuple[tuple[str, ...], tuple[str, ...], float]:
    """(foreground prompt names, background names, box threshold) for ``class_names``.

    ``benchmark`` ``"pascal"`` or ``"coco"`` gives CLIP-ES's own words and threshold (``class_names`` must then
    be that benchmark's, for the count to match); anything else the class names as given, COCO's background
    words that are not class names, and 0.4.
    """
    if benchmark in CLIP_ES_CLASS_NAMES:
        names = CLIP_ES_CLASS_NAMES[benchmark]
        if len(names) != len(class_names):
            raise ValueError(f"CLIP-ES names {len(names)} {benchmark} classes, got {len(class_names)} class names")
        return names, CLIP_ES_BACKGROUND[benchmark], CLIP_ES_BOX_THRESHOLD[benchmark]
    taken = {name.lower() for name in class_names}
    background = tuple(name for name in CLIP_ES_BACKGROUND["coco"] if name not in taken)
    return tuple(class_names), background, DEFAULT_BOX_THRESHOLD
