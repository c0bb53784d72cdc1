"""Released-format IMR-HSNet state dicts (``best_model.pt``): writing them and loading them into
:class:`model.imrhsnet.IMRHSNet`.

The released ``train.py`` saved ``nn.DataParallel(model).state_dict()``, so every key starts with
``module.``; the bare model's keys are the same without it (:func:`released_state_dict` writes that format
from the unwrapped model, so the released ``test.py`` loads our files). Mismatches raise :class:`CheckpointMismatchError`
naming the first offending keys, and a checkpoint made with another backbone is reported as such.

Slim checkpoints (``last.pt`` always, ``best_model.pt`` with ``train.py --slim-checkpoints``) leave out the
frozen backbone, which training never changes (a VGG16 one is ~550 MB of the ~570 MB): they hold the other
tensors and the backbone's name, the weights it was built from (``--backbone-weights``) and the SHA-256 of its
tensors (:func:`backbone_sha256`). Loading one needs a model built with those backbone weights; another
backbone (a different hash) is refused naming the weights the checkpoint needs.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from common.distributed import unwrap
from common.errors import UserInputError, brief

PREFIX = "module."
SHOW = 8
BACKBONE_PREFIX = "backbone."
SLIM_FORMAT = "imrhsnet-slim-1"


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
    return {5: "resnet50", 22: "resnet101"}.get(max(blocks, default=None))


def released_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with ``module.``-prefixed keys, as the released DataParallel save; tensors on the CPU.

    ``model`` may be wrapped in DataParallel / DDP; the keys are those of the model inside, prefixed once.
    """
    return {f"{PREFIX}{key}": value.detach().cpu() for key, value in unwrap(model).state_dict().items()}


class SlimState(dict):
    """A slim checkpoint's tensors (no ``backbone.*`` keys) and ``backbone``: the record of the backbone they
    need (``name``, ``weights``, ``sha256``)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], backbone: Mapping[str, Any]) -> None:
        super().__init__(tensors)
        self.backbone = dict(backbone)


def backbone_sha256(model: nn.Module) -> str:
    """SHA-256 of the backbone's tensors (names, dtypes, shapes and bytes, in name order): the identity a slim
    checkpoint records of the frozen backbone it was trained on."""
    digest = hashlib.sha256()
    for key, value in sorted(unwrap(model).backbone.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def backbone_record(model: nn.Module, weights: Optional[str], sha256: Optional[str] = None) -> dict[str, Any]:
    """What a slim checkpoint records of ``model``'s backbone: its name, the ``--backbone-weights`` it was built
    from (``"imagenet"``, a file, or None for random) and :func:`backbone_sha256` (given, or computed)."""
    return {"name": getattr(unwrap(model), "backbone_type", None), "weights": None if weights is None else str(weights),
            "sha256": sha256 or backbone_sha256(model)}


def slim_state_dict(model: nn.Module, backbone: Mapping[str, Any]) -> dict[str, Any]:
    """A slim checkpoint of ``model``: every tensor but the backbone's (on the CPU), and the ``backbone``
    record (:func:`backbone_record`)."""
    tensors = {key: value.detach().cpu() for key, value in unwrap(model).state_dict().items()
               if not key.startswith(BACKBONE_PREFIX)}
    return {"format": SLIM_FORMAT, "backbone": dict(backbone), "model": tensors}


def is_slim(source: Any) -> bool:
    """Whether ``source`` (a loaded checkpoint) is a slim one (:func:`slim_state_dict`, or ``last.pt``)."""
    return isinstance(source, SlimState) or (isinstance(source, Mapping) and isinstance(source.get("backbone"), Mapping)
                                             and "sha256" in source["backbone"])


def checkpoint_backbone_weights(source: Union[str, Path, Mapping[str, Any]]) -> Optional[str]:
    """The ``--backbone-weights`` a slim checkpoint was trained from (None for a full checkpoint, which holds its
    backbone, and for a slim one trained from random weights)."""
    state = read_state_dict(source)
    return state.backbone.get("weights") if isinstance(state, SlimState) else None


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
    if isinstance(source, SlimState):
        return source
    if not isinstance(source, Mapping):
        raise CheckpointMismatchError(f"{origin}expected a state dict, got {type(source).__name__}")
    if is_slim(source) and isinstance(source.get("model"), Mapping):
        return SlimState(strip_prefix(source["model"]), source["backbone"])
    if "model" in source and isinstance(source["model"], Mapping):
        source = source["model"]
    return strip_prefix(source)


def check_state_fits(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str = "") -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` (prefix stripped) loads strictly into ``model``.

    ``origin`` (e.g. ``"path: "``) starts the message, which names the backbone or the first offending keys.
    """
    expected = model.state_dict()
    slim = isinstance(state, SlimState)
    if slim:
        expected = {k: v for k, v in expected.items() if not k.startswith(BACKBONE_PREFIX)}
    want = getattr(model, "backbone_type", None)
    got = state.backbone.get("name") if slim else detect_backbone(state)
    if want is not None and got is not None and want != got:
        raise CheckpointMismatchError(f"{origin}checkpoint was made with backbone {got!r} but the model is "
                                      f"{want!r} (pass --backbone {got})")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = [f"{what}: {_first(keys)}" for what, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if keys]
    if problems:
        raise CheckpointMismatchError(f"{origin}checkpoint does not fit the model: " + "; ".join(problems))


def load_model_state(model: nn.Module, source: Union[str, Path, Mapping[str, torch.Tensor]], *,
                     origin: Optional[str] = None) -> nn.Module:
    """Load a released-format state dict (``module.`` prefix optional) into ``model``, strictly; or a slim one,
    whose backbone must be the model's (same :func:`backbone_sha256`). ``origin`` starts error messages
    (default: the file's path).

    Raises:
        CheckpointMismatchError: other backbone, missing or unexpected keys, shape mismatches (the message lists
            the first offending keys), or a slim checkpoint's backbone weights differ from the model's.
    """
    if origin is None:
        origin = f"{Path(source).expanduser()}: " if isinstance(source, (str, Path)) else ""
    state = read_state_dict(source)
    check_state_fits(model, state, origin)
    if isinstance(state, SlimState):
        check_backbone(model, state.backbone, origin)
        model.load_state_dict(state, strict=False)  # the backbone's keys stay as built (checked equal)
    else:
        model.load_state_dict(state)
    return model


def check_backbone(model: nn.Module, record: Mapping[str, Any], origin: str = "",
                   sha256: Optional[str] = None, random_hint: Optional[str] = None) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``model``'s backbone is the one a slim checkpoint's
    ``record`` names (same tensors: :func:`backbone_sha256`, or ``sha256`` when already computed);
    ``random_hint`` replaces the advice for a backbone trained from random weights."""
    have = sha256 or backbone_sha256(model)
    if have == record.get("sha256"):
        return
    weights = record.get("weights")
    need = (f"pass --backbone-weights {weights}" if weights else random_hint or
            "it was trained from random backbone weights, which cannot be rebuilt here; use a full checkpoint "
            "(train.py without --slim-checkpoints writes best_model.pt with its backbone)")
    raise CheckpointMismatchError(
        f"{origin}slim checkpoint (no backbone tensors) of a {record.get('name')} backbone built from "
        f"--backbone-weights {weights or 'none'} (sha256 {str(record.get('sha256'))[:12]}...), but the model's "
        f"backbone has other weights (sha256 {have[:12]}...): {need}")
