"""Center-pivot 4D convolution (HSNet).

A 4D kernel over (Ha, Wa, Hb, Wb) is approximated by two 2D convolutions whose kernels cross at the center:
``conv1`` slides over the query dims (Ha, Wa) for every support position, ``conv2`` slides over the support
dims (Hb, Wb) for every query position, and the two are summed. The stride applies to the support dims only
(the query dims keep their size); ``conv1`` therefore sees the support positions subsampled with that stride
(HSNet's "prune").

The two 2D convolutions get the very (N, C, H, W) images HSNet gives them, so the numerics are HSNet's bit for
bit; the copies around them are fewer than HSNet's four per layer (two permuted inputs, two permuted outputs):

* ``conv2``'s input (B*Ha*Wa, C, Hb, Wb) is a free view when the 6D tensor is stored as (B, Ha, Wa, C, Hb, Wb),
  the order :func:`model.correlation.multilayer_correlation` writes the correlations in; otherwise one copy;
* ``conv1``'s input is the (strided) pruned tensor, a copy of 1/s^2 of the input;
* the two outputs are summed straight into a contiguous (B, O, Ha, Wa, Hb', Wb') tensor (one pass, no permuted
  copies of the outputs), which GroupNorm then reads without a copy of its own.

Both input copies are registered with the active :class:`~model.recompute.RecomputeScope` (rebuilt in backward).
(Running the two convolutions as 3D convolutions over views of the 6D tensor would need no copy at all; it
was measured and dropped: see ``benchmarks/NOTES.md``.)
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from model.recompute import recomputable


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
        """(B, C, Ha, Wa, Hb, Wb), any memory order -> contiguous (B, O, Ha, Wa, Hb', Wb')."""
        bsz, inch, ha, wa, hb, wb = x.shape
        sh, sw = self.support_stride
        pruned = x[..., ::sh, ::sw] if (sh, sw) != (1, 1) else x  # (B, C, Ha, Wa, hb', wb')
        hbp, wbp = pruned.shape[-2:]

        # query-dims conv: one 2D image (C, Ha, Wa) per (b, support position)
        in1 = _copy_if_needed(pruned.permute(0, 4, 5, 1, 2, 3).reshape(bsz * hbp * wbp, inch, ha, wa), x,
                              _query_images, (sh, sw))
        out1 = self.conv1(in1)  # (B*hb'*wb', O, Ha, Wa)
        outch = out1.shape[1]

        # support-dims conv: one 2D image (C, Hb, Wb) per (b, query position)
        in2 = _copy_if_needed(x.permute(0, 2, 3, 1, 4, 5).reshape(bsz * ha * wa, inch, hb, wb), x,
                              _support_images, None)
        out2 = self.conv2(in2)  # (B*Ha*Wa, O, hb', wb')
        return add_contiguous(out1.view(bsz, hbp, wbp, outch, ha, wa).permute(0, 3, 4, 5, 1, 2),
                              out2.view(bsz, ha, wa, outch, hbp, wbp).permute(0, 3, 1, 2, 4, 5))


def _query_images(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """(B*hb'*wb', C, Ha, Wa) contiguous: ``conv1``'s input."""
    bsz, inch, ha, wa = x.shape[:4]
    pruned = x[..., ::stride[0], ::stride[1]] if stride != (1, 1) else x
    return pruned.permute(0, 4, 5, 1, 2, 3).reshape(-1, inch, ha, wa).contiguous()


def _support_images(x: torch.Tensor, _: Any) -> torch.Tensor:
    """(B*Ha*Wa, C, Hb, Wb) contiguous: ``conv2``'s input."""
    inch, hb, wb = x.shape[1], x.shape[4], x.shape[5]
    return x.permute(0, 2, 3, 1, 4, 5).reshape(-1, inch, hb, wb).contiguous()


def _copy_if_needed(images: torch.Tensor, x: torch.Tensor, rebuild: Any, arg: Any) -> torch.Tensor:
    """``images`` (a view of ``x`` or a copy) as a contiguous tensor: a strided view is copied here (the
    convolution would copy it itself, in forward and again in backward). A copy is registered as
    ``rebuild(x, arg)``, which returns it contiguous (see :func:`~model.recompute.recomputable`)."""
    if torch.compiler.is_compiling():  # no scope there, and storage addresses would break the graph
        return images.contiguous()
    if images.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        if images.is_contiguous():
            return images
        images = images.contiguous()
    return recomputable(images, rebuild, x, arg)


class _AddContiguous(torch.autograd.Function):
    """``a + b`` written into a new contiguous tensor whatever the inputs' memory orders (``a + b`` would
    follow ``a``'s order); the gradient passes to both unchanged."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = torch.empty(a.shape, dtype=torch.result_type(a, b), device=a.device)
        return torch.add(a, b, out=out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return grad, grad


def add_contiguous(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` (same shape, same values) as a contiguous tensor, without copying either input first."""
    if a.is_contiguous() and b.is_contiguous():
        return a + b
    if torch.compiler.is_compiling():  # the compiler plans the layout itself (an out= add breaks its graph)
        return (a + b).contiguous()
    return _AddContiguous.apply(a, b)
