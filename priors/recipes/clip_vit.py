"""CLIP ViT (OpenAI's ViT-B/16 for CLIP-ES) through open_clip: the weights file, the model, random weights.

open_clip's ``build_model_from_openai_state_dict`` builds the ViT with OpenAI's module names (``visual.conv1``,
``visual.class_embedding``, ``visual.positional_embedding``, ``visual.ln_pre``,
``visual.transformer.resblocks.{i}.{ln_1,attn,ln_2,mlp.c_fc,mlp.c_proj}``, ``visual.ln_post``, ``visual.proj``
and the text tower's), and loads OpenAI's ``ViT-B-16.pt`` strictly; ``tests/test_priors_clip_es.py`` checks
the names and shapes against the ones OpenAI's ``build_model`` gives.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional, Union

import torch
from torch import nn

from priors.clip_weights import ClipWeightsError, build_openai_clip, load_openai_clip

__all__ = ["VIT_MODEL_NAME", "build_clip_vit", "load_clip_vit", "load_clip_vit_with_identity",
           "random_clip_vit_state_dict"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
VIT_MODEL_NAME = "ViT-B-16"
QK_GAIN = 3.0  # random weights: query/key scale (see random_clip_vit_state_dict)


def build_clip_vit(state_dict: dict[str, torch.Tensor], *, source: str = "state dict",
                   precision: str = "fp32") -> nn.Module:
    """An eval-mode, frozen open_clip ``CLIP`` ViT (QuickGELU) from an OpenAI-format state dict.

    Shapes (width, depth, patch size, grid) are read from the tensors. ``precision``: ``"fp32"`` (what CLIP-ES
    computes on a CPU) or ``"fp16"`` (OpenAI's float16 weights, what ``clip.load`` keeps on a GPU).
    """
    if "visual.proj" not in state_dict or "visual.class_embedding" not in state_dict:
        what = "a ResNet CLIP" if "visual.layer1.0.conv1.weight" in state_dict else "no visual.proj/class_embedding"
        raise ClipWeightsError(f"{source}: not an OpenAI CLIP ViT checkpoint such as ViT-B-16.pt ({what})")
    return build_openai_clip(state_dict, source=source, precision=precision, model_name="ViT")


def _load(weights: Optional[PathLike], cache_dir: Optional[PathLike],
          precision: str) -> tuple[nn.Module, Callable[[], str]]:
    """The model on the CPU and a function giving its weights' identity (:func:`load_openai_clip`)."""
    return load_openai_clip(VIT_MODEL_NAME, weights, cache_dir, precision, build=build_clip_vit,
                            random_state_dict=random_clip_vit_state_dict, log=logger)


def load_clip_vit(weights: Optional[PathLike] = None, *, device: Union[str, torch.device] = "cpu",
                  cache_dir: Optional[PathLike] = None, precision: str = "fp32") -> nn.Module:
    """CLIP ViT-B/16 (open_clip, OpenAI weights) in eval mode on ``device``, parameters frozen.

    Args:
        weights: OpenAI's ``ViT-B-16.pt`` (TorchScript) or a state dict with its keys; None: the cache,
            downloaded when online (:func:`priors.clip_weights.resolve_openai_weights`); ``"random"`` /
            ``"random:SEED"``: ViT-B/16 from :func:`random_clip_vit_state_dict` (seed 0 / SEED), offline, with a
            warning: its priors carry no class information.
    Raises:
        ClipWeightsError: a missing/unreadable/incompatible file, or no download possible.
    """
    return _load(weights, cache_dir, precision)[0].to(device)


def load_clip_vit_with_identity(weights: Optional[PathLike] = None, *, device: Union[str, torch.device] = "cpu",
                                cache_dir: Optional[PathLike] = None,
                                precision: str = "fp32") -> tuple[nn.Module, str]:
    """:func:`load_clip_vit`, and what identifies its weights in a CAM manifest: the file's SHA-256, or for random
    weights :func:`priors.clip_weights.random_weights_identity`."""
    model, identity = _load(weights, cache_dir, precision)
    return model.to(device), identity()


def random_clip_vit_state_dict(seed: int = 0, *, width: int = 768, layers: int = 12, patch_size: int = 16,
                               image_size: int = 224, embed_dim: int = 512, text_width: int = 512,
                               text_layers: int = 12, vocab_size: int = 49408,
                               context_length: int = 77) -> dict[str, torch.Tensor]:
    """A random CLIP ViT state dict in OpenAI's format (defaults: ViT-B/16's shapes), deterministic in ``seed``.

    Conv/linear weights are stored in float16 like the official archive, so every loader sees the same numbers;
    the global RNG is left untouched. Keep ``context_length`` 77: CLIP-ES's text transformer tells text from
    image tokens by that length.
    """
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, convert_weights_to_fp16

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(embed_dim,
                     vision_cfg=CLIPVisionCfg(layers=layers, width=width, patch_size=patch_size, image_size=image_size),
                     text_cfg=CLIPTextCfg(context_length=context_length, vocab_size=vocab_size, width=text_width,
                                          heads=max(1, text_width // 64), layers=text_layers),
                     quick_gelu=True)
        for name, param in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
                param.data.uniform_(0.5, 1.5)  # open_clip initialises LayerNorms to 1/0: make them count
            elif name.endswith(("ln_1.bias", "ln_2.bias", "ln_pre.bias", "ln_post.bias", "ln_final.bias")):
                param.data.normal_(0.0, 0.1)
            elif name.endswith("in_proj_bias") or name.endswith("out_proj.bias"):
                param.data.normal_(0.0, 0.02)
            elif name.startswith("visual.") and name.endswith("in_proj_weight"):
                # sharper queries and keys: attention as peaked as a trained CLIP's, not near-uniform (a
                # near-uniform affinity flattens the refined CAMs, whose min-max then magnifies rounding)
                param.data[: 2 * param.shape[1]] *= QK_GAIN
        convert_weights_to_fp16(model)
    return {k: v.clone() for k, v in model.state_dict().items()}
