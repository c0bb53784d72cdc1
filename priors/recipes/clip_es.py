"""``clip-es``: CLIP-ES priors (Lin et al., CVPR 2023, "CLIP is Also an Efficient Segmenter"; training-free),
computed as CLIP-ES's released ``generate_cams_voc12.py`` / ``generate_cams_coco14.py`` compute them.

Per image (CLIP ViT-B/16, :mod:`priors.recipes.clip_vit`):

1. the image at its own aspect ratio: bicubic resize to ``ceil(H/16)*16 x ceil(W/16)*16``, CLIP mean/std; the
   positional embedding interpolated bilinearly to that grid (and, as released, rounded through float16);
2. all transformer blocks but the last without autograd, keeping each block's head-averaged attention;
3. the last block, ``ln_post``, the mean of the patch tokens (not the class token), the projection, and the
   softmax of ``exp(logit_scale) * cos`` over the foreground prompt names plus CLIP-ES's background names
   (``"a clean origami {}."``, :mod:`priors.recipes.clip_es_names`);
4. Grad-CAM of the class's probability on the last block's ``ln_1`` output, patch tokens only: channel weights
   = mean gradient over the patches, ReLU of the weighted sum, min-max normalised (twice, as released);
5. the class-aware attention affinity: the mean attention of the last 8 blocks between patches, normalised
   Sinkhorn-style (columns then rows, three times), symmetrised, squared once, restricted to the patches inside
   the boxes around the CAM's regions above ``box_threshold`` of its maximum; the refined CAM is that
   affinity times the CAM;
6. min-max normalised and ``cv2.resize``-d (bilinear) to the image's size, as CLIP-ES saves it; then, for
   this repository, ``cv2.resize``-d to the (cam_size, cam_size) the model reads.

Label modes (``label_mode``): ``"all"`` (default) runs the softmax over all of the benchmark's class names plus
the background names, so no other label of the image is needed; ``"image"`` is CLIP-ES's own recipe: the
softmax over the image's own label list (the classes passed for it) plus the background names. The latter
uses the image's other labels, which a few-shot query does not have: a label leak.

Batching changes no arithmetic that matters: the trunk runs on images of equal size together (each image's
tokens attend within the image), and the last block runs once per image with one row per wanted class.
"""
from __future__ import annotations

import math
import operator
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms
from torchvision.transforms import InterpolationMode

import open_clip
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from common.constants import CAM_SIZE
from common.io import names_sha256
from priors.recipes.base import PriorRecipe
from priors.recipes.clip_es_names import CLIP_ES_PROMPT, LABEL_MODES, clip_es_vocabulary
from priors.recipes.clip_vit import VIT_MODEL_NAME, load_clip_vit_with_identity

__all__ = ["ClipES", "ClipESImage", "ClipESPreprocess", "LABEL_MODES", "box_mask", "build_clip_es",
           "refine_with_affinity"]

AFFINITY_LAYERS = 8       # the last 8 blocks' attention
SINKHORN_ROUNDS = 3       # column-then-row normalisations (one before the loop of two, as released)
EPS = 1e-7                # pytorch-grad-cam's min-max normalisation


# ----------------------------------------------------------------------------------------------------------
# Image
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ClipESImage:
    """One preprocessed image: ``pixels`` (3, 16*gh, 16*gw) and the original ``size`` (W, H)."""

    pixels: torch.Tensor
    size: tuple[int, int]


class ClipESPreprocess:
    """PIL image -> :class:`ClipESImage`: bicubic resize of each side up to a multiple of ``patch_size``, RGB
    conversion (after resizing, as released), CLIP mean/std. Picklable (no model), for DataLoader workers."""

    def __init__(self, patch_size: int = 16) -> None:
        self.patch_size = int(patch_size)
        self.tail = transforms.Compose([operator.methodcaller("convert", "RGB"), transforms.ToTensor(),
                                        transforms.Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)])

    def __call__(self, image: Image.Image) -> ClipESImage:
        width, height = image.size
        side = [math.ceil(s / self.patch_size) * self.patch_size for s in (height, width)]
        resized = transforms.Resize(side, interpolation=InterpolationMode.BICUBIC)(image)
        return ClipESImage(self.tail(resized), (width, height))


# ----------------------------------------------------------------------------------------------------------
# ViT forward with attention
# ----------------------------------------------------------------------------------------------------------
def _positional_embedding(visual: nn.Module, grid: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """The learned (1 + G*G, D) embedding, its patch part bilinearly resized to ``grid`` (gh, gw):
    (1 + gh*gw, D). CLIP-ES stores the resized embedding in float16, so it is rounded through float16 here too."""
    pos = visual.positional_embedding
    side = int(round(math.sqrt(pos.shape[0] - 1)))
    patches = pos[1:].T.reshape(1, pos.shape[1], side, side)                      # (1, D, G, G)
    patches = F.interpolate(patches.float(), size=grid, mode="bilinear", align_corners=False)
    patches = patches.reshape(pos.shape[1], -1).T                                 # (gh*gw, D), row-major
    return torch.cat([pos[:1].float(), patches]).half().to(dtype)


def _tokens(visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Patch embedding + class token + positional embedding + ``ln_pre``: (N, 3, H, W) -> (N, 1+gh*gw, D)."""
    x = visual.conv1(pixels)                                                      # (N, D, gh, gw)
    grid = (x.shape[2], x.shape[3])
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)                    # (N, gh*gw, D)
    cls = visual.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype,
                                                           device=x.device)
    x = torch.cat([cls, x], dim=1) + _positional_embedding(visual, grid, x.dtype)
    return visual.ln_pre(x)


def _block(block: nn.Module, x: torch.Tensor,
           normed: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One residual attention block on (N, L, D) tokens -> (tokens, head-averaged attention (N, L, L));
    ``normed``: its ``ln_1(x)``, when the caller needs that tensor (the Grad-CAM layer)."""
    q = block.ln_1(x) if normed is None else normed
    batch_first = block.attn.batch_first
    q = q if batch_first else q.transpose(0, 1)                                   # (N, L, D) or (L, N, D)
    out, weights = block.attn(q, q, q, need_weights=True, average_attn_weights=True)
    x = x + block.ls_1(out if batch_first else out.transpose(0, 1))
    return x + block.ls_2(block.mlp(block.ln_2(x))), weights


# ----------------------------------------------------------------------------------------------------------
# Refinement
# ----------------------------------------------------------------------------------------------------------
def box_mask(cam: np.ndarray, threshold: float) -> np.ndarray:
    """CLIP-ES's box mask of a (h, w) CAM in [0, 1]: 1 inside the bounding box of every contour (nested ones
    too) of the 8-bit CAM's pixels above ``int(threshold * max)``. As released, a box ends at ``w - 1`` /
    ``h - 1`` exclusive, so the last row and column are never inside.
    Returns a (h, w) float32 map."""
    height, width = cam.shape
    levels = (cam * 255).astype(np.uint8)
    _, binary = cv2.threshold(levels, int(threshold * levels.max()), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    mask = np.zeros((height, width), np.float32)
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        mask[y:min(y + h, height - 1), x:min(x + w, width - 1)] = 1
    return mask


def sinkhorn_affinity(attention: torch.Tensor) -> torch.Tensor:
    """(n, n) patch-to-patch attention -> CLIP-ES's transition matrix: columns then rows normalised to sum 1,
    three times; symmetrised; squared once. Float32 (n, n)."""
    trans = attention.float()
    for _ in range(SINKHORN_ROUNDS):
        trans = trans / trans.sum(dim=0, keepdim=True)
        trans = trans / trans.sum(dim=1, keepdim=True)
    trans = (trans + trans.T) / 2
    return trans @ trans


def refine_with_affinity(affinity: torch.Tensor, cams: np.ndarray, threshold: float) -> np.ndarray:
    """Refined CAMs: ``(affinity * box_mask[None, :]) @ cam`` for each (h, w) CAM of ``cams`` (P, h, w);
    (P, h, w) float32, not normalised."""
    out = np.empty_like(cams, dtype=np.float32)
    for i, cam in enumerate(cams):
        mask = torch.from_numpy(box_mask(cam, threshold)).reshape(1, -1).to(affinity.device)
        flat = torch.from_numpy(np.float32(cam)).reshape(-1, 1).to(affinity.device)
        out[i] = torch.matmul(affinity * mask, flat).reshape(cam.shape).cpu().numpy()
    return out


def _min_max(maps: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's ``scale_cam_image`` without resizing: each map minus its min, over (1e-7 + its max)."""
    maps = maps - maps.min(axis=(-2, -1), keepdims=True)
    return np.float32(maps / (EPS + maps.max(axis=(-2, -1), keepdims=True)))


# ----------------------------------------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------------------------------------
class ClipES(PriorRecipe):
    """CLIP-ES refined CAMs (see the module docstring).

    Args:
        model: an open_clip CLIP ViT (:func:`priors.recipes.clip_vit.load_clip_vit`), eval mode.
        class_names: the benchmark's classes (class index = position).
        prompt_names: the words prompted for them (default: ``class_names``).
        background_names: CLIP-ES's background categories (empty: none).
        label_mode: ``"all"`` or ``"image"`` (see the module docstring).
        box_threshold: share of the CAM's maximum that delimits the affinity's box mask.
        weights_sha256: recorded in the settings.
    """

    name = "clip-es"

    def __init__(self, model: nn.Module, class_names: Sequence[str], *, prompt_names: Optional[Sequence[str]] = None,
                 background_names: Sequence[str] = (), label_mode: str = "all", box_threshold: float = 0.4,
                 prompt_template: str = CLIP_ES_PROMPT, weights_sha256: Optional[str] = None) -> None:
        super().__init__(class_names)
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
        self.prompt_names = tuple(prompt_names) if prompt_names is not None else self.class_names
        if len(self.prompt_names) != len(self.class_names):
            raise ValueError(f"{len(self.prompt_names)} prompt names for {len(self.class_names)} classes")
        self.background_names = tuple(background_names)
        self.label_mode, self.box_threshold = label_mode, float(box_threshold)
        self.prompt_template, self.weights_sha256 = prompt_template, weights_sha256
        self.model = model.eval()
        self.dtype = model.visual.conv1.weight.dtype
        self.patch_size = int(model.visual.conv1.kernel_size[0])
        self._preprocess = ClipESPreprocess(self.patch_size)
        text = self._encode_names(self.prompt_names + self.background_names)
        self.foreground_text, self.background_text = text[:len(self.prompt_names)], text[len(self.prompt_names):]

    @property
    def settings(self) -> dict[str, Any]:
        return {"clip_model": VIT_MODEL_NAME, "clip_weights_sha256": self.weights_sha256,
                "precision": "fp16" if self.dtype == torch.float16 else "fp32",
                "class_names_sha256": names_sha256(self.class_names),
                "prompt_template": self.prompt_template, "prompt_names_sha256": names_sha256(self.prompt_names),
                "background_names": list(self.background_names), "label_mode": self.label_mode,
                "box_threshold": self.box_threshold, "affinity_layers": AFFINITY_LAYERS,
                "patch_size": self.patch_size}

    @property
    def reads_image_labels(self) -> bool:
        """Label mode ``image``: the softmax runs over the classes asked for an image, its label list."""
        return self.label_mode == "image"

    @property
    def device(self) -> torch.device:
        return self.model.visual.conv1.weight.device

    @property
    def preprocess(self) -> ClipESPreprocess:
        return self._preprocess

    @torch.no_grad()
    def _encode_names(self, names: Sequence[str]) -> torch.Tensor:
        """CLIP-ES's ``zeroshot_classifier`` with one template: normalised text features (K, E), float32."""
        tokens = open_clip.tokenize([self.prompt_template.format(name) for name in names]).to(self.device)
        feats = self.model.encode_text(tokens).float()
        feats = feats / feats.norm(dim=-1, keepdim=True)
        return feats / feats.norm(dim=-1, keepdim=True)  # the released mean over templates, then again

    def _text_for(self, classes: list[int]) -> tuple[torch.Tensor, list[int]]:
        """The softmax's text features for an image's classes, and each class's target column."""
        if self.label_mode == "all":
            return torch.cat([self.foreground_text, self.background_text]), classes
        own = list(dict.fromkeys(classes))  # the image's label list, first occurrence order
        text = torch.cat([self.foreground_text[own], self.background_text])
        return text, [own.index(c) for c in classes]

    def _head_cams(self, tokens: torch.Tensor, classes: list[int], grid: tuple[int, int]
                   ) -> tuple[np.ndarray, torch.Tensor]:
        """Last block + softmax + Grad-CAM for one image's classes.

        Args:
            tokens: (L, D) after all blocks but the last; grid: (gh, gw) with gh*gw = L - 1.
        Returns:
            CAMs (P, gh, gw) float32 in [0, 1], and the last block's attention (L, L).
        """
        visual = self.model.visual
        block = visual.transformer.resblocks[-1]
        text, targets = self._text_for(classes)
        x = tokens.unsqueeze(0).expand(len(classes), -1, -1)                       # (P, L, D)
        with torch.enable_grad():
            normed = block.ln_1(x).detach().requires_grad_(True)                   # the Grad-CAM layer
            y, attention = _block(block, x, normed)
            pooled = visual.ln_post(y)[:, 1:, :].mean(dim=1) @ visual.proj         # (P, E)
            pooled = pooled / pooled.norm(dim=1, keepdim=True)
            text = text.to(pooled.dtype)
            text = text / text.norm(dim=1, keepdim=True)
            probs = (self.model.logit_scale.exp() * pooled @ text.T).softmax(dim=-1)  # (P, K)
            rows = torch.arange(len(classes), device=probs.device)
            score = probs[rows, torch.tensor(targets, device=probs.device)].sum()
            (grads,) = torch.autograd.grad(score, normed)
        gh, gw = grid
        # (P, L, D) -> patches (P, D, gh, gw), in float32 numpy as pytorch-grad-cam computes
        act = normed.detach()[:, 1:].reshape(len(classes), gh, gw, -1).permute(0, 3, 1, 2).float().cpu().numpy()
        grad = grads[:, 1:].reshape(len(classes), gh, gw, -1).permute(0, 3, 1, 2).float().cpu().numpy()
        weights = np.mean(grad, axis=(2, 3))                                        # (P, D)
        cams = np.maximum((weights[:, :, None, None] * act).sum(axis=1), 0).astype(np.float32)
        cams = _min_max(np.maximum(_min_max(cams), 0))  # per layer, then after the (one-layer) aggregation
        return cams, attention[0].detach()

    @torch.no_grad()
    def _trunk(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """All blocks but the last: (N, 3, H, W) -> tokens (N, L, D) and the attention (N, L, L) of the blocks
        among the last :data:`AFFINITY_LAYERS` (all but the final one, which the head computes)."""
        blocks = self.model.visual.transformer.resblocks
        x = _tokens(self.model.visual, pixels.to(self.device, dtype=self.dtype))
        kept = []
        for index, block in enumerate(blocks[:-1]):
            x, weights = _block(block, x)
            if index >= len(blocks) - AFFINITY_LAYERS:
                kept.append(weights)
        return x, kept

    def _image_cams(self, tokens: torch.Tensor, attentions: list[torch.Tensor], classes: list[int],
                    grid: tuple[int, int], size: tuple[int, int], cam_size: Optional[int]) -> torch.Tensor:
        """One image's refined CAMs: (P, cam_size, cam_size), or at its own (H, W) with ``cam_size=None``."""
        cams, last = self._head_cams(tokens, classes, grid)
        stacked = torch.stack([a[1:, 1:] for a in attentions] + [last[1:, 1:]])[-AFFINITY_LAYERS:]
        affinity = sinkhorn_affinity(stacked.mean(dim=0))                           # (n, n)
        refined = _min_max(refine_with_affinity(affinity, cams, self.box_threshold))
        highres = [cv2.resize(m, size) for m in refined]  # at the image's (W, H), as CLIP-ES saves them
        if cam_size is not None:
            highres = [cv2.resize(m, (cam_size, cam_size)) for m in highres]
        return torch.from_numpy(np.ascontiguousarray(np.stack(highres), dtype=np.float32))

    def compute(self, inputs: Sequence[ClipESImage], class_lists: Sequence[Sequence[int]],
                cam_size: Optional[int] = CAM_SIZE) -> list[torch.Tensor]:
        """Refined CAMs per image, (len(class_lists[i]), cam_size, cam_size); ``cam_size=None`` gives them at
        each image's own size, as CLIP-ES saves them (before its float16 rounding)."""
        lists = self.check_request(inputs, class_lists)
        out: list[Optional[torch.Tensor]] = [None] * len(inputs)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(inputs):
            if not lists[i]:
                width, height = (cam_size, cam_size) if cam_size is not None else item.size
                out[i] = torch.zeros(0, height, width)
            else:
                by_shape.setdefault(tuple(item.pixels.shape), []).append(i)
        for shape, indices in by_shape.items():
            grid = (shape[1] // self.patch_size, shape[2] // self.patch_size)
            tokens, attentions = self._trunk(torch.stack([inputs[i].pixels for i in indices]))
            for row, i in enumerate(indices):
                out[i] = self._image_cams(tokens[row], [a[row] for a in attentions], lists[i], grid,
                                          inputs[i].size, cam_size)
        return [t for t in out if t is not None]


def build_clip_es(class_names: Sequence[str], *, weights: Optional[Union[str, os.PathLike]] = None,
                  model: Optional[nn.Module] = None, device: Union[str, torch.device] = "cpu",
                  precision: str = "fp32", benchmark: Optional[str] = None, label_mode: str = "all",
                  weights_sha256: Optional[str] = None) -> ClipES:
    """CLIP-ES over ``class_names``.

    Args:
        weights: OpenAI's ``ViT-B-16.pt`` or a state dict with its keys (None: the cache, downloaded when
            online; ``"random"`` / ``"random:SEED"``: random ViT-B/16 weights, see
            :func:`priors.recipes.clip_vit.load_clip_vit`). Ignored when ``model`` is given.
        model: an already loaded open_clip CLIP ViT (e.g. random weights in tests).
        device, precision: where and in which precision CLIP runs (``"fp32"`` or ``"fp16"``).
        benchmark: ``"pascal"`` / ``"coco"``: CLIP-ES's class words, background words and box threshold for it
            (:func:`priors.recipes.clip_es_names.clip_es_vocabulary`); else the names as given.
        label_mode: ``"all"`` (default) or ``"image"`` (CLIP-ES's own; a label leak for few-shot queries).
        weights_sha256: recorded in the settings; when weights are loaded here, their identity (the file's
            SHA-256, or what random weights record) unless given.
    """
    if model is None:
        model, identity = load_clip_vit_with_identity(weights, device=device, precision=precision)
        weights_sha256 = weights_sha256 or identity
    model = model.to(device)
    prompt_names, background, threshold = clip_es_vocabulary(class_names, benchmark)
    return ClipES(model, class_names, prompt_names=prompt_names, background_names=background,
                  label_mode=label_mode, box_threshold=threshold, weights_sha256=weights_sha256)

