"""The released CAM procedure, pair by pair (the reference our batched CAMs are checked and timed against).

Used by ``tests/test_cam_gradcam.py`` and ``benchmarks/bench_cam.py``; not library code.
"""
from __future__ import annotations

from typing import Sequence

import open_clip
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from priors.recipes.clip_gradcam import LOGIT_SCALE, PROMPT_TEMPLATE, clip_image_size, clip_preprocess, resize_cams


class _ReleasedClassifier(nn.Module):
    """The released ``CLIP.forward(image)``: re-encodes every prompt on each call; (B, 3, S, S) -> (B, K)."""

    def __init__(self, model: nn.Module, tokens: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("tokens", tokens, persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # the released CLIP casts the image to its weights' dtype (float16 on a GPU) in encode_image
        image_features = self.model.encode_image(image.to(self.model.visual.conv1.weight.dtype))
        text_features = self.model.encode_text(self.tokens)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        return (LOGIT_SCALE * image_features @ text_features.T).softmax(dim=-1)


def per_image_reference_cams(model: nn.Module, images: Sequence[Image.Image], class_indices: Sequence[int],
                             class_names: Sequence[str], cam_size: int = 50) -> torch.Tensor:
    """The released procedure, pair by pair, with pytorch-grad-cam on the whole CLIP: (N, s, s).

    For each pair: preprocess one image, a new ``GradCAM(model, [model.visual.layer4[-1]])`` whose forward
    encodes image *and all prompts*, backward through everything (parameters made trainable, as released),
    then ``cv2.resize`` to ``cam_size``. Slow on purpose: it is the baseline and the reference.
    """
    device = next(model.parameters()).device
    preprocess = clip_preprocess(clip_image_size(model))
    tokens = open_clip.tokenize([PROMPT_TEMPLATE.format(name) for name in class_names]).to(device)
    requires_grad = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)  # the released model's parameters are trainable: backward runs through all
    try:
        out = []
        for image, cls in zip(images, class_indices):
            classifier = _ReleasedClassifier(model, tokens)
            cam = GradCAM(model=classifier, target_layers=[model.visual.layer4[-1]])
            grayscale = cam(input_tensor=preprocess(image).unsqueeze(0), targets=[ClassifierOutputTarget(int(cls))])
            cam.activations_and_grads.release()
            out.append(resize_cams(grayscale, cam_size)[0])
        model.zero_grad(set_to_none=True)
    finally:
        for p, flag in zip(model.parameters(), requires_grad):
            p.requires_grad_(flag)
    return torch.stack(out) if out else torch.zeros(0, cam_size, cam_size)


