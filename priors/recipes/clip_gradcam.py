"""CLIP RN50 Grad-CAM priors: the released recipe, batched.

The released ``generate_cam_*.py`` give every (image, class) pair a coarse mask this way:

* CLIP RN50 (OpenAI weights), prompts ``"a photo of a {class}"`` for all classes of the benchmark;
* CLIP's preprocessing: resize the short side to 224 (bicubic), centre crop 224, CLIP mean/std;
* the "classifier" is the softmax over the prompts of ``100 * cos(image, text)``, and the Grad-CAM target is
  the probability of the image's class;
* Grad-CAM (pytorch-grad-cam) on the output of the visual tower's last bottleneck, ``visual.layer4[-1]``
  (B, 2048, 7, 7): channel weights = spatial mean of the gradient, ReLU of the weighted sum, min-max
  normalised and ``cv2.resize``-d (bilinear) to the input size 224x224, min-max normalised again;
* ``cv2.resize`` (bilinear, half-pixel centres, no antialiasing) to 50x50, saved as a float32 tensor.

The released scripts do this one image at a time, re-encoding all prompts with the text transformer (and
back-propagating through it and through the whole ResNet) for every pair. Here:

* the prompts are encoded once (:func:`encode_prompts`);
* the ResNet trunk up to ``layer4[-1]`` runs without autograd on a batch of images (optionally under CUDA
  autocast), and Grad-CAM runs on the small head (attention pool + prompt softmax) with the layer4 feature
  map as its input; the gradient reaching ``layer4[-1]``'s output is the same, because nothing before it
  enters the head's computation except through that feature map;
* a batch holds many images, each with its own target class: in eval mode every image's output depends on
  that image alone (BatchNorm uses running statistics, the attention pool attends within an image, the
  softmax is per image), so the gradient of ``sum_i p_i[c_i]`` w.r.t. image i's features is exactly the
  gradient of ``p_i[c_i]`` alone; batching changes nothing but float rounding.

Grad-CAM itself (weights, ReLU, min-max, resize to 224, layer aggregation) is pytorch-grad-cam's
:class:`~pytorch_grad_cam.GradCAM`; the only extension is telling it the CAM's size is the *image's* (224),
not its input's (the 7x7 features), see :class:`_HeadGradCAM`. The tests and ``benchmarks/bench_cam.py``
compare against the released per-image procedure, run with the same library (``tests/clip_reference.py``).

Public API (used by the CAM job and ``predict.py``; ``class_names`` in prompt order, e.g.
``data.benchmarks.PASCAL_CLASSES``)::

    model = load_clip("RN50.pt", device=device)            # or load_clip(None): download / cache
    model = load_clip("random", device=device)             # random weights, offline: priors WITHOUT class information
    cams = compute_cams(model, images, class_indices, PASCAL_CLASSES, cam_size=50)   # (N, 50, 50)
    # or, to reuse the encoded prompts across many calls:
    cam = ClipGradCAM(model, PASCAL_CLASSES)
    cams = cam(cam.preprocess_batch(images), class_indices)
"""
from __future__ import annotations

import contextlib
import logging
import operator
import os
from typing import Callable, Optional, Sequence, Union

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms
from torchvision.transforms import InterpolationMode

import open_clip
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from common.constants import CAM_SIZE
from priors.clip_weights import (CLIP_PRECISION_CHOICES, RANDOM_WEIGHTS, ClipWeightsError, build_openai_clip,
                                load_openai_clip, random_clip_seed, random_weights_identity)

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

__all__ = [
    "ClipGradCAM", "ClipPromptHead", "ClipWeightsError", "RANDOM_WEIGHTS", "build_clip_from_state_dict",
    "clip_image_size", "clip_preprocess", "compute_cams", "encode_prompts", "load_clip", "load_clip_with_identity",
    "random_clip_identity", "random_clip_seed", "random_clip_state_dict", "resize_cams", "resolve_clip_precision",
]

PROMPT_TEMPLATE = "a photo of a {}"
LOGIT_SCALE = 100.0  # the released model multiplies by a constant 100, not by exp(logit_scale)
CLIP_MODEL_NAME = "RN50"


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------
def build_clip_from_state_dict(state_dict: dict[str, torch.Tensor], *, source: str = "state dict",
                               precision: str = "fp32") -> nn.Module:
    """An eval-mode, frozen open_clip ``CLIP`` (QuickGELU) from an OpenAI-format CLIP ResNet state dict.

    Shapes are read from the tensors (any ModifiedResNet width/depth works, which the tests use for a
    small random CLIP). As in OpenAI's and the released ``build_model``, conv/linear weights pass through
    float16 on the way in (the official weights are stored in float16, so this loses nothing for them).

    ``precision``: ``"fp32"`` (everything in float32, what the released scripts compute on a CPU) or
    ``"fp16"``: the conv/linear/attention weights stay float16 and LayerNorms compute in float32, BatchNorm
    keeps float32 parameters, exactly the model OpenAI's ``clip.load(..., jit=False)`` returns on a GPU, with
    which the authors' CAM files were made.
    """
    required = ("visual.layer1.0.conv1.weight", "visual.attnpool.positional_embedding", "text_projection",
                "token_embedding.weight", "positional_embedding", "ln_final.weight")
    missing = [k for k in required if k not in state_dict]
    if "visual.proj" in state_dict or missing:
        what = "a ViT CLIP" if "visual.proj" in state_dict else f"missing keys {missing}"
        raise ClipWeightsError(f"{source}: not an OpenAI CLIP ResNet (RN50) checkpoint ({what})")
    return build_openai_clip(state_dict, source=source, precision=precision, model_name=CLIP_MODEL_NAME)


def resolve_clip_precision(precision: str, device: Union[str, torch.device]) -> str:
    """The precision CLIP runs in: ``"auto"`` is ``"fp16"`` on CUDA, the authors' setting (OpenAI's
    ``clip.load(jit=False)`` keeps the float16 weights on a GPU, and their CAM files and checkpoints came from
    that), and ``"fp32"`` elsewhere (the released scripts never ran on a CPU, where float16 is slow);
    ``"fp32"`` and ``"fp16"`` are returned as given."""
    if precision not in CLIP_PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {CLIP_PRECISION_CHOICES}, got {precision!r}")
    if precision != "auto":
        return precision
    return "fp16" if torch.device(device).type == "cuda" else "fp32"


def random_clip_identity(seed: int, state_dict: dict[str, torch.Tensor]) -> str:
    """What the CAM manifest records for random RN50 weights in place of a file's SHA-256
    (:func:`priors.clip_weights.random_weights_identity`)."""
    return random_weights_identity(seed, state_dict, CLIP_MODEL_NAME)


def _load(weights: Optional[PathLike], cache_dir: Optional[PathLike],
          precision: str) -> tuple[nn.Module, Callable[[], str]]:
    """The model on the CPU and a function giving its weights' identity (:func:`load_openai_clip`)."""
    return load_openai_clip(CLIP_MODEL_NAME, weights, cache_dir, precision, build=build_clip_from_state_dict,
                            random_state_dict=random_clip_state_dict, log=logger)


def load_clip(weights: Optional[PathLike] = None, *, device: Union[str, torch.device] = "cpu",
              cache_dir: Optional[PathLike] = None, precision: str = "fp32") -> nn.Module:
    """CLIP RN50 (open_clip, OpenAI weights) in eval mode on ``device``, parameters frozen; ``precision``
    ``"fp32"``, ``"fp16"`` (see :func:`build_clip_from_state_dict`) or ``"auto"`` (fp16 on CUDA, fp32
    elsewhere: :func:`resolve_clip_precision`).

    Args:
        weights: the official ``RN50.pt`` (TorchScript) or a plain state dict with the same keys. ``None``:
            ``{cache_dir}/RN50.pt`` if it is there (verified by its SHA-256), else downloaded there.
            ``"random"`` / ``"random:SEED"``: RN50 from :func:`random_clip_state_dict` (seed 0 / SEED), offline,
            with a warning: its CAMs carry no class information.
        device: where the model goes.
        cache_dir: download/cache folder (default ``~/.cache/clip``, shared with OpenAI's ``clip``).
    Raises:
        ClipWeightsError: a missing/unreadable/incompatible file, or no download possible (offline).
    """
    return _load(weights, cache_dir, resolve_clip_precision(precision, device))[0].to(device)


def load_clip_with_identity(weights: Optional[PathLike] = None, *, device: Union[str, torch.device] = "cpu",
                            cache_dir: Optional[PathLike] = None, precision: str = "fp32") -> tuple[nn.Module, str]:
    """:func:`load_clip`, and what identifies its weights in a CAM manifest: the file's SHA-256, or for random
    weights :func:`random_clip_identity`."""
    model, identity = _load(weights, cache_dir, resolve_clip_precision(precision, device))
    return model.to(device), identity()


def clip_preprocess(image_size: int = 224) -> Callable[[Image.Image], torch.Tensor]:
    """CLIP's image transform, in the released order: PIL image -> (3, S, S) normalised float tensor.

    Bicubic resize of the short side to ``image_size`` (PIL, antialiased), centre crop, RGB conversion
    (after resizing, as released), ``ToTensor``, CLIP mean/std.
    """
    return transforms.Compose([
        transforms.Resize(image_size, interpolation=InterpolationMode.BICUBIC),
        transforms.CenterCrop(image_size),
        operator.methodcaller("convert", "RGB"),
        transforms.ToTensor(),
        transforms.Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD),
    ])


def clip_image_size(model: nn.Module) -> int:
    """Input side of the CLIP visual tower (224 for RN50)."""
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


# ----------------------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_prompts(model: nn.Module, class_names: Sequence[str], template: str = PROMPT_TEMPLATE) -> torch.Tensor:
    """L2-normalised text features of ``template.format(name)`` for every class: (K, D), in the model's precision
    (a float16 model normalises in float16, as the released classifier does)."""
    tokens = open_clip.tokenize([template.format(name) for name in class_names])
    device = next(model.parameters()).device
    features = model.encode_text(tokens.to(device))
    if clip_dtype(model) == torch.float32:
        features = features.float()
    return features / features.norm(dim=-1, keepdim=True)


def clip_dtype(model: nn.Module) -> torch.dtype:
    """The dtype CLIP computes in: its first convolution's (float16 for a ``precision="fp16"`` model)."""
    return model.visual.conv1.weight.dtype


# ----------------------------------------------------------------------------------------------------------
# Grad-CAM
# ----------------------------------------------------------------------------------------------------------
class ClipPromptHead(nn.Module):
    """The part of the released "classifier" after ``visual.layer4[-1]``.

    ``forward(feats (B, C4, h, w)) -> probs (B, K)`` = softmax over prompts of
    ``100 * <attnpool(feats)/|.|, text_k>``. ``feature_layer`` is an identity on the input, the Grad-CAM
    target layer: its activation is ``layer4[-1]``'s output, its gradient the gradient reaching it.
    """

    def __init__(self, attnpool: nn.Module, text_features: torch.Tensor) -> None:
        super().__init__()
        self.feature_layer = nn.Identity()
        self.attnpool = attnpool
        self.register_buffer("text_features", text_features, persistent=False)  # (K, D), normalised

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        feats = self.feature_layer(feats)                                  # (B, C4, h, w)
        image_features = self.attnpool(feats)                              # (B, D)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        return (LOGIT_SCALE * image_features @ self.text_features.T).softmax(dim=-1)  # (B, K)


class _HeadGradCAM(GradCAM):
    """pytorch-grad-cam's GradCAM, run on :class:`ClipPromptHead` whose input is the layer4 feature map.

    Two settings differ from a plain ``GradCAM(head, [head.feature_layer])``: the gradient w.r.t. the input
    is requested (the features come from a no-grad trunk), and the CAM is resized to the *image* size,
    as it is when GradCAM runs on the whole network.
    """

    def __init__(self, head: ClipPromptHead, image_size: int) -> None:
        super().__init__(model=head, target_layers=[head.feature_layer])
        self.compute_input_gradient = True
        self.image_size = image_size

    def get_target_width_height(self, input_tensor: torch.Tensor) -> tuple[int, int]:
        return self.image_size, self.image_size


def _trunk(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """open_clip ModifiedResNet up to and including ``layer4``: (B, 3, S, S) -> (B, 32*width, S/32, S/32)."""
    x = visual.stem(images)
    x = visual.layer1(x)
    x = visual.layer2(x)
    x = visual.layer3(x)
    return visual.layer4(x)


def resize_cams(cams: np.ndarray, cam_size: int) -> torch.Tensor:
    """``cv2.resize`` (bilinear, as released) of each (H, W) float32 map: (N, H, W) -> (N, s, s) tensor."""
    out = np.stack([cv2.resize(np.float32(c), (cam_size, cam_size)) for c in cams]) if len(cams) else \
        np.zeros((0, cam_size, cam_size), np.float32)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


class ClipGradCAM:
    """Batched Grad-CAM of CLIP RN50 for many (image, class) pairs; prompts encoded once.

    Args:
        model: an open_clip CLIP ResNet (see :func:`load_clip`), eval mode; its device and precision are used
            (a ``precision="fp16"`` model runs trunk, head and Grad-CAM in float16, as the released scripts on a
            GPU; the CAM is made float32 before its resize, as there).
        class_names: the benchmark's class names (prompt order = class index).
        amp: run a float32 model's trunk under CUDA autocast (float16); the head and the CAM stay in float32.
    """

    def __init__(self, model: nn.Module, class_names: Sequence[str], *, amp: bool = False) -> None:
        self.model = model.eval()
        self.class_names = tuple(class_names)
        self.device = next(model.parameters()).device
        self.dtype = clip_dtype(model)
        self.amp = bool(amp) and self.device.type == "cuda" and self.dtype == torch.float32
        self.image_size = clip_image_size(model)
        self.preprocess = clip_preprocess(self.image_size)
        self.head = ClipPromptHead(model.visual.attnpool, encode_prompts(model, self.class_names)).eval()
        self._gradcam = _HeadGradCAM(self.head, self.image_size)

    def preprocess_batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """CLIP-preprocess PIL images into a (N, 3, S, S) batch."""
        return torch.stack([self.preprocess(img) for img in images])

    @property
    def precision(self) -> str:
        """``"fp16"`` (float16 model), ``"amp"`` (autocast trunk) or ``"fp32"``: what the CAM manifest records."""
        return "fp16" if self.dtype == torch.float16 else "amp" if self.amp else "fp32"

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``visual.layer4[-1]`` output for a preprocessed batch (N, 3, S, S) -> (N, C4, S/32, S/32), float32
        (float16 for a float16 model)."""
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()
        with autocast:
            feats = _trunk(self.model.visual, images.to(self.device, dtype=self.dtype, non_blocking=True))
        return feats.to(self.dtype)

    def cams_from_features(self, feats: torch.Tensor, class_indices: Sequence[int],
                           cam_size: Optional[int] = CAM_SIZE) -> torch.Tensor:
        """Grad-CAM maps from layer4 features (N, C4, h, w), one target class per row.

        Returns (N, cam_size, cam_size) float32 on the CPU, each min-max normalised to [0, 1] (up to the
        1e-7 of pytorch-grad-cam); ``cam_size=None`` returns the (N, S, S) maps before the final resize.
        """
        class_indices = [int(c) for c in class_indices]
        if len(class_indices) != feats.shape[0]:
            raise ValueError(f"{feats.shape[0]} feature maps but {len(class_indices)} class indices")
        bad = [c for c in class_indices if not 0 <= c < len(self.class_names)]
        if bad:
            raise ValueError(f"class indices {bad[:5]} outside 0..{len(self.class_names) - 1}")
        if not class_indices:
            return torch.zeros(0, cam_size or self.image_size, cam_size or self.image_size)
        with torch.enable_grad():
            cams = self._gradcam(input_tensor=feats.to(self.dtype),
                                 targets=[ClassifierOutputTarget(c) for c in class_indices])  # (N, S, S) np
        self._gradcam.outputs = None  # drop the autograd graph kept by the library
        return torch.from_numpy(cams) if cam_size is None else resize_cams(cams, cam_size)

    def __call__(self, images: torch.Tensor, class_indices: Sequence[int],
                 cam_size: Optional[int] = CAM_SIZE) -> torch.Tensor:
        """CAMs of a preprocessed batch (N, 3, S, S), class ``class_indices[i]`` for image i: (N, s, s)."""
        return self.cams_from_features(self.features(images), class_indices, cam_size)


def compute_cams(model: nn.Module, images: Sequence[Image.Image], class_indices: Sequence[int],
                 class_names: Sequence[str], cam_size: int = CAM_SIZE,
                 device: Optional[Union[str, torch.device]] = None, amp: bool = False) -> torch.Tensor:
    """CLIP Grad-CAM priors of PIL ``images`` for their classes: (N, cam_size, cam_size) float32 on the CPU.

    ``device`` moves the model first when given (else the model's device is used). Encodes the prompts on
    every call; build a :class:`ClipGradCAM` once to amortise that over many calls.
    """
    if device is not None:
        model = model.to(device)
    cam = ClipGradCAM(model, class_names, amp=amp)
    return cam(cam.preprocess_batch(images), class_indices, cam_size)


# ----------------------------------------------------------------------------------------------------------
# Random weights (the demo, tests, parity checks and benchmarks without the real RN50.pt)
# ----------------------------------------------------------------------------------------------------------
def random_clip_state_dict(seed: int = 0, *, vision_width: int = 64, vision_layers: Sequence[int] = (3, 4, 6, 3),
                           embed_dim: int = 1024, text_width: int = 512, text_layers: int = 12,
                           image_size: int = 224, vocab_size: int = 49408,
                           context_length: int = 77) -> dict[str, torch.Tensor]:
    """A random CLIP ResNet state dict in OpenAI's format (defaults: RN50's shapes).

    BatchNorm affine parameters and running statistics are randomised too (open_clip's init zeroes every
    block's last BN scale, which would make the residual branches inert), and conv/linear weights are stored
    in float16 like the official archive, so every loader (OpenAI's, the released, open_clip) sees the same
    numbers. Deterministic in ``seed``; the global RNG is left untouched.
    """
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, convert_weights_to_fp16

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(embed_dim,
                     vision_cfg=CLIPVisionCfg(layers=tuple(vision_layers), width=vision_width,
                                              image_size=image_size),
                     text_cfg=CLIPTextCfg(context_length=context_length, vocab_size=vocab_size, width=text_width,
                                          heads=max(1, text_width // 64), layers=text_layers),
                     quick_gelu=True)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        convert_weights_to_fp16(model)
    return {k: v.clone() for k, v in model.state_dict().items()}
