"""What ``--clip-weights`` accepts (the CAM scripts, predict.py, demo.py), and what loading them takes for every
CLIP the prior recipes use (RN50 for ``gradcam-rn50``, ViT-B/16 for ``clip-es``), and the one step that builds
either from an OpenAI state dict (:func:`build_openai_clip`, after each recipe checked the keys).

An OpenAI CLIP file (``RN50.pt`` / ``ViT-B-16.pt``, TorchScript, or a state dict with its keys), or ``random`` /
``random:SEED``: that CLIP built from random weights (:func:`priors.recipes.clip_gradcam.random_clip_state_dict`,
:func:`priors.recipes.clip_vit.random_clip_vit_state_dict`), so that the pipeline runs offline; its priors then
carry no class information, which every use says loudly.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from common.errors import UserInputError
from common.io import sha256_file

__all__ = ["CLIP_PRECISIONS", "CLIP_PRECISION_CHOICES", "DEFAULT_CACHE_DIR", "RANDOM_WEIGHTS", "ClipWeightsError",
           "build_openai_clip", "load_openai_clip", "random_clip_seed", "random_weights_identity",
           "random_weights_warning", "read_clip_state_dict", "resolve_openai_weights"]

PathLike = Union[str, os.PathLike]
RANDOM_WEIGHTS = "random"
DEFAULT_CACHE_DIR = Path("~/.cache/clip").expanduser()  # where OpenAI's clip and open_clip cache their weights
CLIP_PRECISIONS = ("fp32", "fp16")  # how a recipe's CLIP computes
CLIP_PRECISION_CHOICES = ("auto",) + CLIP_PRECISIONS  # the --precision flag; "auto" is resolved per device


class ClipWeightsError(UserInputError, RuntimeError):
    """The CLIP weights could not be found, downloaded or understood."""


def random_clip_seed(weights: Optional[PathLike]) -> Optional[int]:
    """The seed of a ``--clip-weights`` value asking for random weights (``random``: 0, ``random:SEED``); None
    for a file (or None). Raises ClipWeightsError for ``random:`` followed by something else than an integer."""
    if not isinstance(weights, str):
        return None
    if weights == RANDOM_WEIGHTS:
        return 0
    if not weights.startswith(RANDOM_WEIGHTS + ":"):
        return None
    try:
        return int(weights[len(RANDOM_WEIGHTS) + 1:])
    except ValueError:
        raise ClipWeightsError(f"--clip-weights {weights}: expected 'random' or 'random:SEED' with an integer "
                               f"seed (a file of that name: ./{weights})") from None


def resolve_openai_weights(model_name: str, weights: Optional[PathLike] = None, *,
                           cache_dir: Optional[PathLike] = None) -> Path:
    """OpenAI's weights file of CLIP ``model_name`` (open_clip's name: ``RN50``, ``ViT-B-16``): ``weights`` if
    given (it must exist), else ``{cache_dir}/{model_name}.pt``, downloaded there when missing (SHA-256 checked by
    open_clip). Raises ClipWeightsError saying where to put the file."""
    from open_clip.pretrained import download_pretrained_from_url, get_pretrained_url

    url = get_pretrained_url(model_name, "openai")
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ClipWeightsError(f"--clip-weights {path}: no such file (expected OpenAI's {model_name}.pt, from "
                                   f"{url})")
        return path
    cache = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE_DIR
    try:
        return Path(download_pretrained_from_url(url, cache_dir=str(cache)))
    except Exception as exc:  # noqa: BLE001 -- URLError, timeouts, checksum mismatch ...
        raise ClipWeightsError(
            f"could not download the CLIP {model_name} weights ({type(exc).__name__}: {exc}). Offline? Download "
            f"{url} on a machine with internet access and either put it at {cache / f'{model_name}.pt'} or pass "
            f"--clip-weights /path/to/{model_name}.pt") from exc


def read_clip_state_dict(path: Path, model_name: str) -> dict[str, torch.Tensor]:
    """Tensors of an OpenAI CLIP checkpoint: a TorchScript archive (OpenAI's ``{model_name}.pt``) or a plain
    state dict (optionally under ``"state_dict"``, ``module.`` prefixes dropped). Raises ClipWeightsError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": it is OpenAI's format
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except (RuntimeError, ValueError):
        pass  # not a TorchScript archive: try a pickled state dict
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- any unpickling failure means "not a CLIP file"
        raise ClipWeightsError(
            f"--clip-weights {path}: neither a TorchScript archive (OpenAI's {model_name}.pt) nor a torch state dict "
            f"({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ClipWeightsError(f"--clip-weights {path}: expected a dict of tensors (a CLIP state dict), "
                               f"got {type(obj).__name__}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def random_weights_warning(weights: str, model_name: str) -> str:
    """The warning every use of random CLIP weights prints (``weights``: the ``--clip-weights`` value)."""
    from open_clip.pretrained import get_pretrained_url

    return (f"CLIP {model_name} has RANDOM weights (--clip-weights {weights}): its priors carry NO class "
            "information (they only let the pipeline run offline). For real priors pass OpenAI's "
            f"{model_name}.pt: --clip-weights /path/to/{model_name}.pt (from {get_pretrained_url(model_name, 'openai')})")


def random_weights_identity(seed: int, state_dict: dict[str, torch.Tensor], model_name: str) -> str:
    """What the CAM manifest records for random weights in place of a file's SHA-256: the seed, a warning, and
    the SHA-256 of the seed's tensors (names, dtypes, shapes, bytes), so that random CAMs are never taken for
    real ones, nor for those of another seed or of a changed random initialisation."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return (f"{RANDOM_WEIGHTS}:{seed} (random CLIP {model_name} weights: these CAMs carry no class information; "
            f"tensors sha256 {digest.hexdigest()})")


def build_openai_clip(state_dict: dict[str, torch.Tensor], *, source: str, precision: str,
                      model_name: str) -> torch.nn.Module:
    """An eval-mode, frozen open_clip ``CLIP`` (QuickGELU) from an OpenAI-format state dict whose keys the caller
    checked: ``precision`` ``"fp16"`` keeps OpenAI's float16 weights (``clip.load(jit=False)`` on a GPU),
    ``"fp32"`` makes everything float32 (else ValueError). Raises ClipWeightsError naming ``source`` when open_clip
    cannot build it."""
    from open_clip.model import build_model_from_openai_state_dict

    if precision not in CLIP_PRECISIONS:
        raise ValueError(f"precision must be one of {CLIP_PRECISIONS}, got {precision!r}")
    # Non-persistent buffers that a TorchScript archive of an open_clip model carries; not weights.
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith("attn_mask")}
    try:
        model = build_model_from_openai_state_dict(state_dict, quick_gelu=True,
                                                   cast_dtype=torch.float16 if precision == "fp16" else None)
    except (RuntimeError, KeyError, AssertionError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise ClipWeightsError(f"{source}: could not build CLIP {model_name} from it ({type(exc).__name__}: "
                               f"{detail[:400]})") from exc
    if precision == "fp32":
        model = model.float()
    return model.eval().requires_grad_(False)


def load_openai_clip(model_name: str, weights: Optional[PathLike], cache_dir: Optional[PathLike], precision: str, *,
                     build: Callable[..., torch.nn.Module], random_state_dict: Callable[[int], dict[str, torch.Tensor]],
                     log: logging.Logger) -> tuple[torch.nn.Module, Callable[[], str]]:
    """CLIP ``model_name`` on the CPU, built by ``build(state_dict, source=, precision=)`` from a ``--clip-weights``
    value (random weights from ``random_state_dict(seed)``, with the warning, or OpenAI's file, found or
    downloaded by :func:`resolve_openai_weights`), and a function giving its weights' identity (computed only
    when asked: the file's SHA-256, or :func:`random_weights_identity`). ``log``: the recipe's logger."""
    seed = random_clip_seed(weights)
    if seed is not None:
        state = random_state_dict(seed)
        log.warning(random_weights_warning(str(weights), model_name))
        model = build(state, source=f"--clip-weights {weights}", precision=precision)
        return model, lambda: random_weights_identity(seed, state, model_name)
    path = resolve_openai_weights(model_name, weights, cache_dir=cache_dir)
    model = build(read_clip_state_dict(path, model_name), source=f"--clip-weights {path}", precision=precision)
    log.info("CLIP %s weights: %s", model_name, path)
    return model, lambda: sha256_file(path)
