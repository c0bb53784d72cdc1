"""Frozen ImageNet backbones and HSNet's feature taps.

Each backbone is a plain torchvision model (so its state-dict keys are the released ``backbone.*`` keys) plus
a function that runs it and returns the intermediate features HSNet correlates:

* ``vgg16``: the outputs of ``features[17, 19, 21]`` (conv4_1..3, stride 8), ``features[24, 26, 28]``
  (conv5_1..3, stride 16) and ``features[30]`` (pool5, stride 32), taken *before* the following ReLU.
* ``resnet50`` / ``resnet101``: the output of every bottleneck of ``layer2``, ``layer3`` and ``layer4``
  (strides 8, 16, 32), taken after the residual sum and *before* the block's final ReLU.

The features come in three groups (``group_sizes``, shallow to deep), which the correlation stacks into
the three hypercorrelation pyramids layers "l2", "l3", "l4" (VGG16 3/3/1, ResNet50 4/6/3, ResNet101 4/23/3).

Weights (``weights=``): ``"imagenet"`` (torchvision's ImageNet weights, taken from the torch hub cache or
downloaded into it), a path to a local torchvision state-dict file (the released code read
``vgg16-397923af.pth`` / ``resnet50-19c8e357.pth``), or ``"none"`` / ``None`` (random init: tests, or when a full
checkpoint is loaded afterwards since it holds the backbone).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import nn
from torchvision.models import resnet101, resnet50, vgg16

from common.errors import UserInputError, brief

logger = logging.getLogger(__name__)

WeightsArg = Optional[Union[str, Path]]


class BackboneWeightsError(UserInputError, FileNotFoundError):
    """The backbone's weights are missing (offline, wrong path) or are not a torchvision state dict."""
FeatureFn = Callable[[nn.Module, torch.Tensor], list[torch.Tensor]]

VGG16_TAPS = (17, 19, 21, 24, 26, 28, 30)


def extract_vgg(backbone: nn.Module, img: torch.Tensor) -> list[torch.Tensor]:
    """VGG16 features at ``VGG16_TAPS`` (pre-ReLU).

    Args:
        backbone: a torchvision ``VGG`` (only ``backbone.features`` is run).
        img: (B, 3, H, W) normalised images.
    Returns:
        7 tensors: 3 x (B, 512, H/8, W/8), 3 x (B, 512, H/16, W/16), 1 x (B, 512, H/32, W/32) (sizes floored).
    """
    feats = []
    feat = img
    for idx, module in zip(range(VGG16_TAPS[-1] + 1), backbone.features):  # up to the last tap
        # torchvision's ReLUs are in place: apply them out of place so a tapped tensor is never overwritten
        feat = torch.relu(feat) if isinstance(module, nn.ReLU) else module(feat)
        if idx in VGG16_TAPS:
            feats.append(feat)
    return feats


def extract_resnet(backbone: nn.Module, img: torch.Tensor) -> list[torch.Tensor]:
    """ResNet bottleneck outputs of layer2..layer4, after the residual sum and before the final ReLU.

    Args:
        backbone: a torchvision ``ResNet`` with ``Bottleneck`` blocks.
        img: (B, 3, H, W) normalised images.
    Returns:
        one tensor per bottleneck of layer2 (B, 512, H/8, W/8), layer3 (B, 1024, H/16, W/16) and
        layer4 (B, 2048, H/32, W/32) (sizes as the strided convolutions give them).
    """
    feat = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(img))))
    feats = []
    for layer_idx in range(1, 5):
        for block in getattr(backbone, f"layer{layer_idx}"):
            identity = feat if block.downsample is None else block.downsample(feat)
            out = block.relu(block.bn1(block.conv1(feat)))
            out = block.relu(block.bn2(block.conv2(out)))
            out = block.bn3(block.conv3(out)) + identity
            if layer_idx >= 2:
                feats.append(out)
            feat = torch.relu(out)
    return feats


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and read its features.

    Attributes:
        build: torchvision constructor (random init).
        extract: ``extract(backbone, img) -> list of features``.
        group_sizes: number of features in the l2, l3, l4 groups (strides 8, 16, 32).
        mid_channels: channels of the l3 features, summed into the IMR's mid-level feature.
        released_file: the ImageNet file name the released code used (``--backbone-weights imagenet``).
        url: where the ImageNet weights are downloaded from when the file is not in the hub cache.
        alt_files: other names of the same weights that torchvision's current API saves in the hub cache.
    """

    build: Callable[[], nn.Module]
    extract: FeatureFn
    group_sizes: tuple[int, int, int]
    mid_channels: int
    released_file: str
    url: str
    alt_files: tuple[str, ...] = ()


BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(
        build=lambda: vgg16(weights=None), extract=extract_vgg, group_sizes=(3, 3, 1), mid_channels=512,
        released_file="vgg16-397923af.pth", url="https://download.pytorch.org/models/vgg16-397923af.pth"),
    "resnet50": BackboneSpec(
        build=lambda: resnet50(weights=None), extract=extract_resnet, group_sizes=(4, 6, 3), mid_channels=1024,
        released_file="resnet50-19c8e357.pth", url="https://download.pytorch.org/models/resnet50-19c8e357.pth",
        alt_files=("resnet50-0676ba61.pth",)),
    "resnet101": BackboneSpec(
        build=lambda: resnet101(weights=None), extract=extract_resnet, group_sizes=(4, 23, 3), mid_channels=1024,
        released_file="resnet101-63fe2227.pth", url="https://download.pytorch.org/models/resnet101-63fe2227.pth"),
}


def get_spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` of ``name`` (``vgg16``, ``resnet50``, ``resnet101``)."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


def hub_checkpoint_dir() -> Path:
    """The torch hub cache folder where ImageNet weights are looked for (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _imagenet_state_dict(name: str, spec: BackboneSpec) -> dict[str, torch.Tensor]:
    found = [p for p in (hub_checkpoint_dir() / f for f in (spec.released_file, *spec.alt_files)) if p.is_file()]
    if not found:
        try:
            logger.info("Downloading ImageNet weights for %s from %s", name, spec.url)
            return torch.hub.load_state_dict_from_url(spec.url, map_location="cpu", progress=False,
                                                      check_hash=False, weights_only=True)
        except Exception as exc:  # offline, proxy, HTTP error: explain where the file must go
            raise BackboneWeightsError(
                f"ImageNet weights for {name} are not available ({type(exc).__name__}: {exc}). "
                f"Put {spec.released_file} (from {spec.url}) into {hub_checkpoint_dir()}/, or pass the file's "
                f"path with --backbone-weights PATH, or use --backbone-weights none (random init; fine when a "
                f"full checkpoint is loaded afterwards).") from exc
    return torch.load(found[0], map_location="cpu", weights_only=True)


def build_backbone(name: str, weights: WeightsArg = "imagenet") -> nn.Module:
    """A frozen torchvision backbone (parameters ``requires_grad=False``, eval mode).

    Args:
        name: ``vgg16``, ``resnet50`` or ``resnet101``.
        weights: ``"imagenet"``, a path to a torchvision state-dict file, or ``"none"`` / ``None``.
    """
    spec = get_spec(name)
    backbone = spec.build()
    if weights is not None and str(weights).lower() != "none":
        if str(weights).lower() == "imagenet":
            state = _imagenet_state_dict(name, spec)
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise BackboneWeightsError(f"backbone weights file not found: {path} (expected a torchvision "
                                           f"{name} state dict such as {spec.released_file})")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - truncated or not a torch file
                raise BackboneWeightsError(f"--backbone-weights {path}: cannot read it ({brief(exc)}); expected a "
                                           f"torchvision {name} state dict such as {spec.released_file}") from exc
            if not isinstance(state, dict):
                raise BackboneWeightsError(f"--backbone-weights {path}: expected a state dict, got "
                                           f"{type(state).__name__}")
        try:
            backbone.load_state_dict(state)
        except RuntimeError as exc:
            raise BackboneWeightsError(f"--backbone-weights {weights}: not a torchvision {name} state dict "
                                       f"({str(exc).splitlines()[0]})") from exc
    backbone.requires_grad_(False)
    return backbone.eval()
