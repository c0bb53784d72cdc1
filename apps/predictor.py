"""Segment a class in your own images from its label text: the Python API behind ``predict.py``.

No dataset, split lists or precomputed CAM files are needed: the CAM priors are computed on the fly with the
same CLIP Grad-CAM code as ``generate_cam_voc.py`` / ``generate_cam_coco.py`` (:mod:`priors.recipes.clip_gradcam`), and
the masks come from :meth:`model.imrhsnet.IMRHSNet.predict_mask_nshot`, i.e. the K-shot vote of ``test.py``::

    from PIL import Image
    from apps.predictor import Segmenter

    seg = Segmenter.from_checkpoint("best_model.pt", "resnet50", clip_weights="RN50.pt")
    out = seg.segment([Image.open("a.jpg")], [Image.open("q.jpg")], "zebra")
    out.query_masks[0]      # (H, W) uint8 0/1 at q.jpg's own resolution
    out.support_masks[0]    # the refined mask of a.jpg (the method predicts both)
    out.query_cams[0]       # the CLIP Grad-CAM prior the model started from, (img_size/8, img_size/8)
    out = seg.segment([Image.open("a.jpg")], [Image.open("q.jpg")], "zebra", probabilities=True)
    out.query_probabilities[0]   # (H, W) float32 foreground probability (mean over the K shots)

Choices made here (the released code has no such entry point):

* **Prompts.** The released CAM target is the softmax over ``"a photo of a {class}"`` for *all* the benchmark's
  classes, so a single prompt would give a constant softmax and a zero gradient. The user's class is scored
  among a vocabulary's class names (``"pascal"``: the 20 PASCAL names, the default, which the PASCAL
  checkpoints were trained with; or ``"coco"``: the 80 COCO names) plus the user's class. If the user's class
  is already in the vocabulary (compared case-, space-, ``_``- and ``-``-insensitively, so ``"dining table"``
  matches ``"diningtable"``) it is not added again and its CAMs are exactly the released ones. Common other
  names of a vocabulary's classes are mapped to the vocabulary's own (:data:`SYNONYMS`: ``airplane`` ->
  ``aeroplane``, ``tv`` -> ``tvmonitor`` in PASCAL; ``aeroplane`` -> ``airplane``, ``sofa`` -> ``couch`` in COCO;
  ...), and said so in the log. Any other name is new to the vocabulary: it is appended as one more prompt, with
  a warning (so that a misspelt ``aeroplan`` does not silently become a 21st class).
* **CAM size.** CAMs are made at the released file size (50x50) and resized bilinearly (``align_corners=True``)
  to ``img_size / 8`` when that differs, exactly as the data loader treats CAM files.
* **Resolution.** Images are resized to ``img_size`` squared (bilinear, ImageNet mean/std, as in ``data/``).
  Query logits are resized to each query's original size before the argmax/vote (the released
  ``--use_original_imgsize`` path), and support logits to each support's original size.
* **Support masks.** The method refines the support mask *jointly with a query*: each (query, support) episode
  gives its own support prediction. :attr:`Segmentation.support_masks_per_query` keeps them all;
  :attr:`Segmentation.support_masks` is the foreground probability averaged over the queries, > 0.5 (with one
  query that is the episode's argmax).
"""
from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from common.constants import CAM_SIZE, FEATURE_STRIDE, IMG_SIZE
from common.device import resolve_device
from common.errors import FlagError
from common.progress import Progress, track
from common.resize import resize_bilinear
from data.benchmarks import CLASS_NAMES
from data.readers import ImageTransform
from model import build_model
from model.checkpoint import checkpoint_backbone_weights, load_model_state, read_state_dict
from priors.recipes.clip_gradcam import PROMPT_TEMPLATE, ClipGradCAM, load_clip

logger = logging.getLogger(__name__)

CAM_FILE_SIZE = CAM_SIZE  # side of the released CAM files (generate_cam_*.py), resized to img_size / 8 like the loader
VOCABULARIES: dict[str, tuple[str, ...]] = dict(CLASS_NAMES)  # "pascal" (20 names), "coco" (80 names)

__all__ = ["CAM_FILE_SIZE", "SYNONYMS", "VOCABULARIES", "ClassNameMatch", "Segmentation", "Segmenter",
           "match_class_name", "prompt_classes"]

# Other common names of a vocabulary's classes -> the vocabulary's own name (the released prompt's). Names
# that only differ in case, spaces, "_" or "-" ("dining table", "potted plant", "cell-phone") match anyway.
SYNONYMS: dict[str, dict[str, str]] = {
    "pascal": {"airplane": "aeroplane", "plane": "aeroplane", "aircraft": "aeroplane", "motorcycle": "motorbike",
               "ship": "boat", "automobile": "car", "table": "diningtable", "people": "person", "human": "person",
               "plant": "pottedplant", "houseplant": "pottedplant", "couch": "sofa", "tv": "tvmonitor",
               "television": "tvmonitor", "monitor": "tvmonitor"},
    "coco": {"aeroplane": "airplane", "plane": "airplane", "aircraft": "airplane", "motorbike": "motorcycle",
             "ship": "boat", "automobile": "car", "table": "dining table", "people": "person", "human": "person",
             "plant": "potted plant", "houseplant": "potted plant", "sofa": "couch", "tvmonitor": "tv",
             "television": "tv", "monitor": "tv", "phone": "cell phone", "mobile phone": "cell phone",
             "smartphone": "cell phone", "fridge": "refrigerator", "hair dryer": "hair drier", "doughnut": "donut",
             "ball": "sports ball", "teddy": "teddy bear", "remote control": "remote", "computer mouse": "mouse",
             "tennis racquet": "tennis racket", "racket": "tennis racket", "purse": "handbag"},
}


def _key(name: str) -> str:
    """Comparison key of a class name: lower case, letters and digits only ("Dining-Table" -> "diningtable")."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


@dataclass(frozen=True)
class ClassNameMatch:
    """How a class name given by the user was read against a vocabulary.

    Attributes:
        given: the label text as given (spaces normalised).
        name: the class name of the prompt: the vocabulary's own name, or ``given`` when it is new.
        how: ``"exact"`` (the vocabulary's name, up to case, spaces, ``_`` and ``-``), ``"synonym"``
            (:data:`SYNONYMS`) or ``"new"`` (appended as one more prompt).
        vocabulary: ``"pascal"`` or ``"coco"``.
    """

    given: str
    name: str
    how: str
    vocabulary: str

    def message(self) -> Optional[str]:
        """What to tell the user: None for an exact match; a synonym mapped; a new class and the close names."""
        names = VOCABULARIES[self.vocabulary]
        if self.how == "synonym":
            return (f"class name {self.given!r} is {self.name!r} in the {self.vocabulary} vocabulary: its prompt "
                    f"'{PROMPT_TEMPLATE.format(self.name)}' is used")
        if self.how == "new":
            text = (f"class name {self.given!r} is new to the {self.vocabulary} vocabulary (not one of its "
                    f"{len(names)} class names nor a known synonym): it is scored as class {len(names) + 1} "
                    f"beside them")
            close = difflib.get_close_matches(self.given.lower(), names, n=3, cutoff=0.75)
            if close:
                text += f"; did you mean {' or '.join(repr(c) for c in close)}?"
            others = [v for v in VOCABULARIES if v != self.vocabulary and _match_known(self.given, v) is not None]
            if others:
                text += f" (it is a class of --vocabulary {others[0]})"
            return text
        return None


def _match_known(name: str, vocabulary: str) -> Optional[tuple[str, str]]:
    """(the vocabulary's name, ``"exact"`` | ``"synonym"``) of ``name``, or None when it is new."""
    names = VOCABULARIES[vocabulary]
    keys = {_key(n): n for n in names}
    if _key(name) in keys:
        return keys[_key(name)], "exact"
    synonyms = {_key(other): own for other, own in SYNONYMS.get(vocabulary, {}).items()}
    if _key(name) in synonyms:
        return synonyms[_key(name)], "synonym"
    return None


def match_class_name(class_name: str, vocabulary: str = "pascal") -> ClassNameMatch:
    """Read ``class_name`` against ``vocabulary`` (see :class:`ClassNameMatch`). Raises FlagError for an empty
    name or an unknown vocabulary."""
    if vocabulary not in VOCABULARIES:
        raise FlagError(f"--vocabulary {vocabulary!r} is unknown; choose one of {sorted(VOCABULARIES)}")
    name = " ".join(str(class_name).split())
    if not _key(name):
        raise FlagError(f"--class-name {class_name!r} is empty (give the label text, e.g. 'zebra')")
    own, how = _match_known(name, vocabulary) or (name, "new")
    return ClassNameMatch(given=name, name=own, how=how, vocabulary=vocabulary)


def prompt_classes(class_name: str, vocabulary: str = "pascal") -> tuple[tuple[str, ...], int]:
    """The class names whose prompts the CAM softmax runs over, and the index of ``class_name`` among them.

    The vocabulary's names in their released order, plus ``class_name`` appended when it is new to the
    vocabulary (neither its name nor a synonym, :func:`match_class_name`). Raises FlagError (a ValueError) for
    an empty name or an unknown vocabulary.
    """
    match = match_class_name(class_name, vocabulary)
    names = VOCABULARIES[vocabulary]
    if match.how == "new":
        return names + (match.name,), len(names)
    return names, names.index(match.name)


@dataclass
class Segmentation:
    """What :meth:`Segmenter.segment` returns; masks are numpy uint8 0/1, one per input image, in input order.

    Attributes:
        class_name: the label text as given.
        classes: the class names whose prompts the CAM softmax ran over (:attr:`prompts`); the user's class is
            ``classes[class_index]``.
        class_index: index of the user's class among ``classes``.
        query_masks: (H_i, W_i) per query, at that query's original resolution (K-shot vote as ``test.py``).
        support_masks: (H_j, W_j) per support at its original resolution, averaged over the queries.
        support_masks_per_query: ``[i][j]`` the mask of support j predicted in the episode with query i.
        query_cams / support_cams: (h, h) float32 CLIP Grad-CAM priors as the model saw them (h = img_size / 8).
        query_probabilities: (H_i, W_i) float32 foreground probability per query, the mean over the K shots of
            each shot's softmax (with ``segment(..., probabilities=True)``; empty otherwise). With one support,
            ``query_masks`` is this map > 0.5; with K > 1 the masks are the released vote of the K argmaxes.
        support_probabilities: (H_j, W_j) float32 per support, the mean over the queries (its mask is > 0.5).
        class_match: how ``class_name`` was read against the vocabulary (exact, a synonym, new).
    """

    class_name: str
    classes: tuple[str, ...]
    class_index: int
    class_match: Optional[ClassNameMatch] = None
    query_masks: list[np.ndarray] = field(default_factory=list)
    support_masks: list[np.ndarray] = field(default_factory=list)
    support_masks_per_query: list[list[np.ndarray]] = field(default_factory=list)
    query_cams: list[np.ndarray] = field(default_factory=list)
    support_cams: list[np.ndarray] = field(default_factory=list)
    query_probabilities: list[np.ndarray] = field(default_factory=list)
    support_probabilities: list[np.ndarray] = field(default_factory=list)

    @property
    def prompts(self) -> list[str]:
        """The CLIP prompts, ``"a photo of a {class}"`` for every class in :attr:`classes`."""
        return [PROMPT_TEMPLATE.format(name) for name in self.classes]


class Segmenter:
    """An IMR-HSNet and a CLIP RN50 ready to segment a named class in PIL images.

    Args:
        model: an :class:`~model.imrhsnet.IMRHSNet` with its weights loaded; put in eval mode here. Build it
            with ``use_original_imgsize=True`` (as :meth:`from_checkpoint` does) so query logits are resized to
            the original size before the argmax; otherwise masks come at ``img_size`` and are resized (nearest).
        clip_model: an open_clip CLIP ResNet from :func:`priors.recipes.clip_gradcam.load_clip`.
        img_size: square side the images are resized to (released: 400); CAMs are ``img_size / 8`` a side.
        stage: IMR refinement steps (released: 2 PASCAL, 3 COCO).
        vocabulary: ``"pascal"`` or ``"coco"``: the class names the user's class is scored among.
    """

    def __init__(self, model: nn.Module, clip_model: nn.Module, *, img_size: int = IMG_SIZE, stage: int = 2,
                 vocabulary: str = "pascal") -> None:
        if img_size < 32:
            raise ValueError(f"img_size must be >= 32, got {img_size}")
        if stage < 1:
            raise ValueError(f"stage must be >= 1, got {stage}")
        if vocabulary not in VOCABULARIES:
            raise ValueError(f"unknown vocabulary {vocabulary!r}; choose one of {sorted(VOCABULARIES)}")
        self.model = model.eval()
        self.clip_model = clip_model.eval()
        self.img_size = int(img_size)
        self.stage = int(stage)
        self.vocabulary = vocabulary
        self.transform = ImageTransform(self.img_size)
        self._gradcams: dict[tuple[str, ...], ClipGradCAM] = {}  # prompts encoded once per class list
        self._told: set[str] = set()  # class names whose reading was logged

    @classmethod
    def from_checkpoint(cls, checkpoint: Union[str, Path], backbone: str = "resnet50", *,
                        clip_weights: Optional[Union[str, Path]] = None,
                        backbone_weights: Optional[str] = None, device: Union[str, torch.device] = "auto",
                        img_size: int = IMG_SIZE, stage: int = 2, masking: str = "released",
                        vocabulary: str = "pascal", clip_precision: str = "auto") -> "Segmenter":
        """Build the model, load a released-format checkpoint (``best_model.pt``) and CLIP RN50.

        Args:
            checkpoint: IMR-HSNet state dict file (``module.`` prefixes allowed) holding the backbone too, or a
                slim one (``last.pt``, ``--slim-checkpoints``), whose backbone is built from ``backbone_weights``
                or, when None, from the weights the file names.
            backbone: ``vgg16``, ``resnet50`` or ``resnet101`` (must match the checkpoint).
            clip_weights: OpenAI ``RN50.pt`` (or a state dict with its keys); None: the download cache;
                ``"random"``: random weights, offline, priors without class information (a warning says so).
            backbone_weights: initial backbone weights before the checkpoint is loaded (``None``: random).
            device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda:N"`` or a torch.device.
            clip_precision: ``"auto"`` (fp16 on CUDA, as the authors' CAM files were made; fp32 on the CPU),
                ``"fp32"`` or ``"fp16"`` (:func:`priors.recipes.clip_gradcam.resolve_clip_precision`).
        Raises:
            ValueError: unknown backbone / masking; FlagError: unknown vocabulary, empty class name;
            CheckpointError (naming the file): the checkpoint is missing or does not fit; BackboneWeightsError;
            ClipWeightsError.
        """
        device = device if isinstance(device, torch.device) else resolve_device(str(device))
        state = read_state_dict(checkpoint)  # its errors name the file
        if backbone_weights is None:  # a slim checkpoint names the backbone weights it needs
            backbone_weights = checkpoint_backbone_weights(state)
        model = build_model(backbone, backbone_weights=backbone_weights, masking=masking, use_original_imgsize=True)
        load_model_state(model, state, origin=f"{Path(checkpoint).expanduser()}: ")
        clip_model = load_clip(clip_weights, device=device, precision=clip_precision)
        return cls(model.to(device), clip_model, img_size=img_size, stage=stage, vocabulary=vocabulary)

    @property
    def device(self) -> torch.device:
        """The model's device (read from its parameters)."""
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ CAM priors
    def cams(self, images: Sequence[Image.Image], class_name: str) -> torch.Tensor:
        """CLIP Grad-CAM priors of ``class_name`` in ``images``: (N, h, h) float32 on the CPU, h = img_size / 8."""
        classes, index = prompt_classes(class_name, self.vocabulary)
        if classes not in self._gradcams:
            self._gradcams[classes] = ClipGradCAM(self.clip_model, classes)
        gradcam = self._gradcams[classes]
        cams = gradcam(gradcam.preprocess_batch(list(images)), [index] * len(images), CAM_FILE_SIZE)  # (N, 50, 50)
        side = self.img_size // FEATURE_STRIDE
        if cams.shape[-1] != side and len(images):
            cams = resize_bilinear(cams.unsqueeze(1), (side, side)).squeeze(1)  # as data.readers.read_cam
        return cams

    # ------------------------------------------------------------------ segmentation
    def _images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> (N, 3, S, S) normalised batch on the model's device."""
        return torch.stack([self.transform(img.convert("RGB")) for img in images]).to(self.device)

    @torch.no_grad()
    def segment(self, supports: Sequence[Image.Image], queries: Sequence[Image.Image],
                class_name: str, *, probabilities: bool = False, progress: bool = False) -> Segmentation:
        """Masks of ``class_name`` in every query, from K = len(supports) support images of the class.

        Each query is one K-shot episode: :meth:`IMRHSNet.predict_mask_nshot` runs the K one-shot forwards
        (each refines the query and that support together) and votes as ``test.py`` does. The support
        predictions of those forwards are collected with a forward hook, so nothing runs twice.

        Args:
            supports: K >= 1 PIL images showing the class; queries: N >= 1 PIL images to segment.
            class_name: the label text, e.g. ``"zebra"`` (a synonym of a vocabulary's class is read as that
                class, a new name is added with a warning: :func:`match_class_name`).
            probabilities: also return the foreground probability maps (``query_probabilities``,
                ``support_probabilities``).
            progress: report progress over the queries (:mod:`common.progress`; predict.py turns it on).
        Returns:
            A :class:`Segmentation` (masks at each image's original resolution).
        """
        supports, queries = list(supports), list(queries)
        if not supports:
            raise ValueError("segment() needs at least one support image")
        if not queries:
            raise ValueError("segment() needs at least one query image")
        classes, index = prompt_classes(class_name, self.vocabulary)
        match = match_class_name(class_name, self.vocabulary)
        message = match.message()
        if message and match.given not in self._told:  # once per name: a synonym (info), a new class (warning)
            self._told.add(match.given)
            (logger.warning if match.how == "new" else logger.info)(message)
        nshot = len(supports)

        cams = self.cams(supports + queries, class_name).to(self.device)  # (K + N, h, h)
        support_cams, query_cams = cams[:nshot], cams[nshot:]
        support_imgs = self._images(supports).unsqueeze(0)  # (1, K, 3, S, S)
        support_sizes = [(img.height, img.width) for img in supports]

        result = Segmentation(class_name=class_name, classes=classes, class_index=index, class_match=match,
                              query_cams=[c.cpu().numpy() for c in query_cams],
                              support_cams=[c.cpu().numpy() for c in support_cams])
        support_prob_sum: list[Any] = [0.0] * nshot
        episodes = Progress(len(queries), "predict", unit="queries", enabled=progress)
        for query, query_cam in track(zip(queries, query_cams), episodes):
            batch = {"query_img": self._images([query]), "support_imgs": support_imgs,
                     "support_cams": support_cams.unsqueeze(0), "query_cam": query_cam.unsqueeze(0),
                     "org_query_imsize": (query.width, query.height)}
            outputs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (query, support) logits (1, 2, h', w') per shot
            handle = self.model.register_forward_hook(lambda _m, _a, out: outputs.append((out[0], out[1])))
            try:
                pred = self.model.predict_mask_nshot(batch, nshot=nshot, stage=self.stage)  # (1, H?, W?)
            finally:
                handle.remove()
            pred = pred.float().unsqueeze(1)
            if tuple(pred.shape[-2:]) != (query.height, query.width):  # model without use_original_imgsize
                pred = F.interpolate(pred, (query.height, query.width), mode="nearest")
            result.query_masks.append(pred[0, 0].to(torch.uint8).cpu().numpy())
            if probabilities:
                query_size = (query.height, query.width)
                prob_q = sum(resize_bilinear(logit_q, query_size).softmax(dim=1)[0, 1] for logit_q, _ in outputs)
                result.query_probabilities.append((prob_q / nshot).float().cpu().numpy())

            masks = []
            for k, ((_, logit_s), size) in enumerate(zip(outputs, support_sizes)):
                prob = resize_bilinear(logit_s, size).softmax(dim=1)[0, 1]  # (H_k, W_k) foreground probability
                support_prob_sum[k] = support_prob_sum[k] + prob
                masks.append((prob > 0.5).to(torch.uint8).cpu().numpy())
            result.support_masks_per_query.append(masks)
        result.support_masks = [(p / len(queries) > 0.5).to(torch.uint8).cpu().numpy() for p in support_prob_sum]
        if probabilities:
            result.support_probabilities = [(p / len(queries)).float().cpu().numpy() for p in support_prob_sum]
        return result
