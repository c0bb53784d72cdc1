"""Center-pivot 4D convolution (HSNet).

A 4D kernel over (Ha, Wa, Hb, Wb) is approximated by two 2D convolutions whose kernels cross at the center:
``conv1`` slides over the query dims (Ha, Wa) for every support position, ``conv2`` slides over the support
dims (Hb, Wb) for every query position, and the two are summed. The stride applies to the support dims only
(the query dims keep their size); ``conv1`` therefore sees the support positions subsampled with that stride
(HSNet's "prune").
"""
from __future__ import annotations

import torch
from torch import nn


class CenterPivotConv4d(nn.Module):
    """Center-pivot 4D convolution.

    Args:
        in_channels / out_channels: channels C -> O.
        kernel_size: (ka, ka, kb, kb); stride: (1, 1, s, s); padding: (pa, pa, pb, pb).
    Input (B, C, Ha, Wa, Hb, Wb) -> output (B, O, Ha, Wa, Hb', Wb'), Hb' = ceil(Hb / s) with the padding
    HSNet uses (k // 2).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int, int],
                 stride: tuple[int, int, int, int], padding: tuple[int, int, int, int], bias: bool = True) -> None:
        super().__init__()
        if stride[:2] != (1, 1):
            raise ValueError(f"center-pivot conv keeps the query dims: stride[:2] must be (1, 1), got {stride}")
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size[:2], stride=stride[:2], bias=bias,
                               padding=padding[:2])
        self.conv2 = nn.Conv2d(in_channels, out_channels, kernel_size[2:], stride=stride[2:], bias=bias,
                               padding=padding[2:])
        self.support_stride = tuple(stride[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, Ha, Wa, Hb, Wb) -> (B, O, Ha, Wa, Hb', Wb')."""
        bsz, inch, ha, wa, hb, wb = x.shape
        sh, sw = self.support_stride
        pruned = x[..., ::sh, ::sw] if (sh, sw) != (1, 1) else x  # (B, C, Ha, Wa, hb', wb')
        hbp, wbp = pruned.shape[-2:]

        # query-dims conv: one 2D image (C, Ha, Wa) per (b, support position)
        out1 = pruned.permute(0, 4, 5, 1, 2, 3).reshape(bsz * hbp * wbp, inch, ha, wa)
        out1 = self.conv1(out1)  # (B*hb'*wb', O, Ha, Wa)
        outch = out1.shape[1]
        out1 = out1.view(bsz, hbp, wbp, outch, ha, wa).permute(0, 3, 4, 5, 1, 2)  # (B, O, Ha, Wa, hb', wb')

        # support-dims conv: one 2D image (C, Hb, Wb) per (b, query position)
        out2 = x.permute(0, 2, 3, 1, 4, 5).reshape(bsz * ha * wa, inch, hb, wb)
        out2 = self.conv2(out2)  # (B*Ha*Wa, O, hb', wb')
        out2 = out2.view(bsz, ha, wa, outch, hbp, wbp).permute(0, 3, 1, 2, 4, 5)  # (B, O, Ha, Wa, hb', wb')
        return out1 + out2
