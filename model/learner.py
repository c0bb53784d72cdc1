"""HSNet's 4D-convolutional hypercorrelation encoder (``HPNLearner.forward_conv4d``).

Squeezing blocks (one per pyramid layer) shrink the support dims and lift the channels to 128; mixing blocks
merge l4 into l3 and l3 into l2 (after bilinearly resizing the *query* dims, which differ per layer); the
result is averaged over the support dims to a 2D map (B, 128, Ha, Wa) at the l2 (stride-8) resolution.
The released IMR-HSNet moved the 2D decoder out of the learner (``decoder1`` / ``decoder2`` of the model),
so this module has no decoder.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from common.resize import resize_bilinear
from model.conv4d import CenterPivotConv4d, add_contiguous
from model.recompute import recomputable, recomputed

CHANNELS = (16, 64, 128)


def building_block(in_channels: int, out_channels: Sequence[int], kernel_sizes: Sequence[int],
                   support_strides: Sequence[int], groups: int = 4) -> nn.Sequential:
    """[CenterPivotConv4d, GroupNorm, ReLU] x len(out_channels), as HSNet's ``make_building_block``."""
    layers: list[nn.Module] = []
    for idx, (outch, ksz, stride) in enumerate(zip(out_channels, kernel_sizes, support_strides, strict=True)):
        inch = in_channels if idx == 0 else out_channels[idx - 1]
        layers += [CenterPivotConv4d(inch, outch, (ksz,) * 4, (1, 1, stride, stride), (ksz // 2,) * 4),
                   nn.GroupNorm(groups, outch), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def run_block(block: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """One building block: (B, C, Ha, Wa, Hb, Wb) -> contiguous (B, O, Ha, Wa, Hb', Wb').

    Each ReLU output (kept for ReLU's and the next convolution's backward) is registered as GroupNorm + ReLU of
    the convolution's output, which GroupNorm's backward keeps anyway (see :mod:`model.recompute`).
    """
    layers = list(block)
    for conv, norm, act in zip(layers[0::3], layers[1::3], layers[2::3], strict=True):
        out = conv(x)
        # registered before the in-place ReLU saves it: the recipe gives its final value
        x = act(recomputable(norm(out), _norm_act, out, norm, act))
    return x


def _norm_act(out: torch.Tensor, norm: nn.Module, act: nn.Module) -> torch.Tensor:
    return act(norm(out))


def resize_query_dims(corr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners) resize of the query dims: (B, C, Ha, Wa, Hb, Wb) -> (B, C, h, w, Hb, Wb).

    (HSNet calls this ``interpolate_support_dims``, but it resizes dims 2 and 3, the query's.) The result is
    a permuted view; its backward keeps nothing.
    """
    bsz, ch, ha, wa, hb, wb = corr.shape
    flat = corr.permute(0, 4, 5, 1, 2, 3).reshape(bsz * hb * wb, ch, ha, wa)
    flat = resize_bilinear(flat, size)
    return flat.view(bsz, hb, wb, ch, *size).permute(0, 3, 4, 5, 1, 2)


def resize_support_dims(corr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners) resize of the support dims: (B, C, Ha, Wa, Hb, Wb) -> (B, C, Ha, Wa, h, w).

    Never needed at the released 400-pixel input (all squeezed layers reach the same support size); used
    only for input sizes where the strided support dims of two layers end up different.
    """
    bsz, ch, ha, wa, hb, wb = corr.shape
    flat = corr.permute(0, 2, 3, 1, 4, 5).reshape(bsz * ha * wa, ch, hb, wb)
    flat = resize_bilinear(flat, size)
    return flat.view(bsz, ha, wa, ch, *size).permute(0, 3, 1, 2, 4, 5)


@recomputed
def _mix(coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    """A mixing block's input: ``coarse`` resized to ``fine`` (its query dims, and its support dims if they differ),
    plus ``fine``, as a contiguous tensor (registered as this very sum)."""
    coarse = resize_query_dims(coarse, tuple(fine.shape[2:4]))
    if coarse.shape[4:] != fine.shape[4:]:
        coarse = resize_support_dims(coarse, tuple(fine.shape[4:]))
    return add_contiguous(coarse, fine)


class HPNLearner(nn.Module):
    """Hypercorrelation squeeze + mix (state-dict keys as released: ``encoder_layer{4,3,2,4to3,3to2}``).

    Args:
        inch: number of stacked layers in the l4, l3, l2 correlations (VGG16: 1, 3, 3; ResNet50: 3, 6, 4).
    """

    def __init__(self, inch: Sequence[int]) -> None:
        super().__init__()
        c1, c2, c3 = CHANNELS
        self.encoder_layer4 = building_block(inch[0], [c1, c2, c3], [3, 3, 3], [2, 2, 2])
        self.encoder_layer3 = building_block(inch[1], [c1, c2, c3], [5, 3, 3], [4, 2, 2])
        self.encoder_layer2 = building_block(inch[2], [c1, c2, c3], [5, 5, 3], [4, 4, 2])
        self.encoder_layer4to3 = building_block(c3, [c3, c3, c3], [3, 3, 3], [1, 1, 1])
        self.encoder_layer3to2 = building_block(c3, [c3, c3, c3], [3, 3, 3], [1, 1, 1])

    def forward(self, corr_pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[corr_l4, corr_l3, corr_l2]`` (B, n_l, Ha_l, Wa_l, Hb_l, Wb_l) -> (B, 128, Ha_l2, Wa_l2)."""
        sqz4 = run_block(self.encoder_layer4, corr_pyramid[0])
        sqz3 = run_block(self.encoder_layer3, corr_pyramid[1])
        sqz2 = run_block(self.encoder_layer2, corr_pyramid[2])

        mix43 = run_block(self.encoder_layer4to3, _mix(sqz4, sqz3))
        mix432 = run_block(self.encoder_layer3to2, _mix(mix43, sqz2))  # (B, 128, Ha, Wa, Hb', Wb')
        return mix432.flatten(4).mean(dim=-1)  # mean over the support positions
