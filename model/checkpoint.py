"""Released-format IMR-HSNet state dicts (``best_model.pt``): writing them and loading them into
:class:`model.imrhsnet.IMRHSNet`.

The released ``train.py`` saved ``nn.DataParallel(model).state_dict()``, so every key starts with
``module.``; the bare model's keys are the same without it (:func:`released_state_dict` writes that format
from the unwrapped model, so the released ``test.py`` loads our files). Mismatches raise :class:`CheckpointMismatchError`
naming the first offending keys, and a checkpoint made with another backbone is reported as such.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
from torch import nn

from common.distributed import unwrap
from common.errors import UserInputError, brief

PREFIX = "module."
SHOW = 8


class CheckpointError(UserInputError, RuntimeError):
    """A checkpoint file is missing, unreadable or does not fit the model; the message names it."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


class CheckpointMismatchError(CheckpointError):
    """The state dict does not fit the model (other backbone, missing/unexpected keys, other shapes)."""


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = PREFIX) -> dict[str, torch.Tensor]:
    """Drop a leading ``module.`` (DataParallel / DDP) from every key that has it."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def detect_backbone(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """``vgg16`` / ``resnet50`` / ``resnet101`` from the ``backbone.*`` keys, None if unrecognisable."""
    keys = [k for k in state_dict if k.startswith("backbone.")]
    if any(k.startswith("backbone.features.") for k in keys):
        return "vgg16"
    blocks = [int(m.group(1)) for k in keys if (m := re.match(r"backbone\.layer3\.(\d+)\.", k))]
    if blocks:
        return {5: "resnet50", 22: "resnet101"}.get(max(blocks))
    return None


def released_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with ``module.``-prefixed keys, as the released DataParallel save; tensors on the CPU.

    ``model`` may be wrapped in DataParallel / DDP; the keys are those of the model inside, prefixed once.
    """
    return {f"{PREFIX}{key}": value.detach().cpu() for key, value in unwrap(model).state_dict().items()}


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOW])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > SHOW else "")


def read_state_dict(source: Union[str, Path, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A state dict from a mapping or a file (``best_model.pt``, or a dict with a ``"model"`` entry).

    Raises:
        CheckpointNotFoundError / CheckpointError: the file is missing, unreadable or not a state dict.
    """
    origin = ""
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        origin = f"{path}: "
        if not path.is_file():
            raise CheckpointNotFoundError(f"checkpoint not found: {path}")
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, unsafe pickle: not a checkpoint
            raise CheckpointError(f"cannot read checkpoint {path} ({brief(exc)}); expected a best_model.pt "
                                  "state dict") from exc
    if not isinstance(source, Mapping):
        raise CheckpointMismatchError(f"{origin}expected a state dict, got {type(source).__name__}")
    if "model" in source and isinstance(source["model"], Mapping):
        source = source["model"]
    return strip_prefix(source)


def check_state_fits(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str = "") -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` (prefix stripped) loads strictly into ``model``.

    ``origin`` (e.g. ``"path: "``) starts the message, which names the backbone or the first offending keys.
    """
    expected = model.state_dict()
    want, got = getattr(model, "backbone_type", None), detect_backbone(state)
    if want is not None and got is not None and want != got:
        raise CheckpointMismatchError(f"{origin}checkpoint was made with backbone {got!r} but the model is "
                                      f"{want!r} (pass --backbone {got})")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_first(shapes)}")
    if problems:
        raise CheckpointMismatchError(f"{origin}checkpoint does not fit the model: " + "; ".join(problems))


def load_model_state(model: nn.Module, source: Union[str, Path, Mapping[str, torch.Tensor]]) -> nn.Module:
    """Load a released-format state dict (``module.`` prefix optional) into ``model``, strictly.

    Raises:
        CheckpointMismatchError: other backbone, missing or unexpected keys, or shape mismatches; the message
            lists the first offending keys.
    """
    origin = f"{Path(source).expanduser()}: " if isinstance(source, (str, Path)) else ""
    state = read_state_dict(source)
    check_state_fits(model, state, origin)
    model.load_state_dict(state)
    return model
