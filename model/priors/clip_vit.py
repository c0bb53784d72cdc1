"""CLIP ViT (OpenAI's ViT-B/16 for CLIP-ES) through open_clip: the weights file, the model, random weights.

open_clip's ``build_model_from_openai_state_dict`` builds the ViT with OpenAI's module names (``visual.conv1``,
``visual.class_embedding``, ``visual.positional_embedding``, ``visual.ln_pre``,
``visual.transformer.resblocks.{i}.{ln_1,attn,ln_2,mlp.c_fc,mlp.c_proj}``, ``visual.ln_post``, ``visual.proj``
and the text tower's), and loads OpenAI's ``ViT-B-16.pt`` strictly; ``tests/test_priors_clip_es.py`` checks
the names and shapes against the ones OpenAI's ``build_model`` gives.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from open_clip.model import build_model_from_openai_state_dict
from open_clip.pretrained import download_pretrained_from_url, get_pretrained_url

from model.clip_gradcam import CLIP_PRECISIONS, ClipWeightsError

__all__ = ["VIT_MODEL_NAME", "build_clip_vit", "load_clip_vit", "random_clip_vit_state_dict", "resolve_vit_weights"]

PathLike = Union[str, os.PathLike]
VIT_MODEL_NAME = "ViT-B-16"
DEFAULT_CACHE_DIR = Path("~/.cache/clip").expanduser()  # where OpenAI's clip and open_clip cache ViT-B-16.pt
QK_GAIN = 3.0  # random weights: query/key scale (see random_clip_vit_state_dict)


def resolve_vit_weights(weights: Optional[PathLike] = None, *, cache_dir: Optional[PathLike] = None) -> Path:
    """The ViT-B/16 weights file: ``weights`` if given (it must exist), else ``{cache_dir}/ViT-B-16.pt``,
    downloaded there when missing (SHA-256 checked by open_clip). Raises ClipWeightsError saying where to put it."""
    url = get_pretrained_url(VIT_MODEL_NAME, "openai")
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ClipWeightsError(f"--clip-weights {path}: no such file (expected OpenAI's ViT-B-16.pt, from {url})")
        return path
    cache = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE_DIR
    try:
        return Path(download_pretrained_from_url(url, cache_dir=str(cache)))
    except Exception as exc:  # noqa: BLE001 -- URLError, timeouts, checksum mismatch ...
        raise ClipWeightsError(
            f"could not download the CLIP ViT-B/16 weights ({type(exc).__name__}: {exc}). Offline? Download {url} "
            f"on a machine with internet access and either put it at {cache / 'ViT-B-16.pt'} or pass "
            "--clip-weights /path/to/ViT-B-16.pt") from exc


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of an OpenAI CLIP checkpoint: a TorchScript archive (``ViT-B-16.pt``) or a plain state dict."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": it is OpenAI's format
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except (RuntimeError, ValueError):
        pass  # not a TorchScript archive: try a pickled state dict
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- any unpickling failure means "not a CLIP file"
        raise ClipWeightsError(f"--clip-weights {path}: neither a TorchScript archive (OpenAI's ViT-B-16.pt) nor a "
                               f"torch state dict ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ClipWeightsError(f"--clip-weights {path}: expected a dict of tensors (a CLIP state dict), "
                               f"got {type(obj).__name__}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def build_clip_vit(state_dict: dict[str, torch.Tensor], *, source: str = "state dict",
                   precision: str = "fp32") -> nn.Module:
    """An eval-mode, frozen open_clip ``CLIP`` ViT (QuickGELU) from an OpenAI-format state dict.

    Shapes (width, depth, patch size, grid) are read from the tensors. ``precision``: ``"fp32"`` (what CLIP-ES
    computes on a CPU) or ``"fp16"`` (OpenAI's float16 weights, what ``clip.load`` keeps on a GPU).
    """
    if precision not in CLIP_PRECISIONS:
        raise ValueError(f"precision must be one of {CLIP_PRECISIONS}, got {precision!r}")
    if "visual.proj" not in state_dict or "visual.class_embedding" not in state_dict:
        what = "a ResNet CLIP" if "visual.layer1.0.conv1.weight" in state_dict else "no visual.proj/class_embedding"
        raise ClipWeightsError(f"{source}: not an OpenAI CLIP ViT checkpoint such as ViT-B-16.pt ({what})")
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith("attn_mask")}
    try:
        model = build_model_from_openai_state_dict(state_dict, quick_gelu=True,
                                                   cast_dtype=torch.float16 if precision == "fp16" else None)
    except (RuntimeError, KeyError, AssertionError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise ClipWeightsError(f"{source}: could not build CLIP ViT from it ({type(exc).__name__}: "
                               f"{detail[:400]})") from exc
    if precision == "fp32":
        model = model.float()
    return model.eval().requires_grad_(False)


def load_clip_vit(weights: Optional[PathLike] = None, *, device: Union[str, torch.device] = "cpu",
                  cache_dir: Optional[PathLike] = None, precision: str = "fp32") -> nn.Module:
    """CLIP ViT-B/16 (open_clip, OpenAI weights) in eval mode on ``device``, parameters frozen.

    Args:
        weights: OpenAI's ``ViT-B-16.pt`` (TorchScript) or a state dict with its keys; None: the cache,
            downloaded when online (:func:`resolve_vit_weights`).
    Raises:
        ClipWeightsError: a missing/unreadable/incompatible file, or no download possible.
    """
    path = resolve_vit_weights(weights, cache_dir=cache_dir)
    model = build_clip_vit(_read_state_dict(path), source=f"--clip-weights {path}", precision=precision)
    return model.to(device)


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
