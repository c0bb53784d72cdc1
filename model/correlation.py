"""Multi-layer cosine correlation (HSNet's hypercorrelation), clamped at zero.

For one pair of feature maps ``q`` (B, C, Ha, Wa) and ``s`` (B, C, Hb, Wb):

    corr[b, i, j, k, l] = max(0, <q[b, :, i, j], s[b, :, k, l]> / ((|q[b, :, i, j]| + eps) (|s[b, :, k, l]| + eps)))

with eps = 1e-5 added to each norm, as released. The layers of one group (same stride) are stacked as
channels of a 4D tensor: (B, n_layers, Ha, Wa, Hb, Wb).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import torch

from model.recompute import recomputable

EPS = 1e-5


def l2_normalize(feat: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H*W), each position divided by (its channel L2 norm + eps).

    The result (kept by the correlation's backward) is registered as this division (see :mod:`model.recompute`),
    so only ``feat`` (or its own recipe) and the (B, 1, H*W) norms are kept.
    """
    flat = feat.flatten(2)
    denominator = flat.norm(dim=1, p=2, keepdim=True) + eps
    return recomputable(flat / denominator, torch.div, flat, denominator)


class _ClampMinZero(torch.autograd.Function):
    """``x.clamp(min=0)`` whose backward keeps the output instead of the input.

    ``clamp``'s own backward keeps ``x`` to know where the gradient passes: where ``x > 0`` (PyTorch 2.x) or
    ``x >= 0`` (older releases; :func:`_clamp_grad_passes_at_zero` asks the installed one). ``x > 0`` is
    ``out > 0``; for the older rule the few exact zeros of ``x`` are kept too. Here the output is kept (it is
    the correlation the 4D convolutions keep anyway): the same gradient, bit for bit.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clamp(min=0)
        zeros = None
        if ctx.needs_input_grad[0] and _clamp_grad_passes_at_zero():
            zeros = torch.nonzero(x.eq(0).view(-1)).view(-1)
        ctx.save_for_backward(out, zeros)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out, zeros = ctx.saved_tensors
        grad_input = torch.where(out > 0, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
        if zeros is not None and zeros.numel():
            at_zero = torch.zeros(out.numel(), dtype=torch.bool, device=out.device)
            at_zero[zeros] = True
            grad_input = torch.where(at_zero.view(out.shape), grad, grad_input)
        return grad_input


@functools.lru_cache(maxsize=None)
def _clamp_grad_passes_at_zero() -> bool:
    """Whether the installed PyTorch's ``clamp(min=0)`` passes the gradient at ``x == 0``."""
    with torch.enable_grad():
        x = torch.zeros(1, requires_grad=True)
        x.clamp(min=0).backward(torch.ones(1))
    return bool(x.grad.item() != 0)


def clamp_min_zero(x: torch.Tensor) -> torch.Tensor:
    """``x.clamp(min=0)``; in a graph, its backward keeps the output, not ``x`` (see :class:`_ClampMinZero`)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _ClampMinZero.apply(x)
    return x.clamp(min=0)


def multilayer_correlation(query_feats: Sequence[torch.Tensor], support_feats: Sequence[torch.Tensor],
                           group_sizes: Sequence[int]) -> list[torch.Tensor]:
    """HSNet's ``Correlation.multilayer_correlation``: the per-layer correlations stacked into the pyramid.

    Each group is stacked before it is clamped (elementwise, so the values are HSNet's): the clamp's backward
    then keeps the pyramid itself, which the 4D convolutions keep anyway.

    Args:
        query_feats / support_feats: per-layer (B, C_l, H_l, W_l), shallow to deep.
        group_sizes: layers in the l2, l3, l4 groups.
    Returns:
        ``[corr_l4, corr_l3, corr_l2]`` (deepest group first), each (B, n_layers, Ha, Wa, Hb, Wb) of that group's
        stride, stored as (B, Ha, Wa, n_layers, Hb, Wb): the layout in which the 4D convolution's support-dims
        images (B*Ha*Wa, n_layers, Hb, Wb) are a view (see :mod:`model.conv4d`).
    """
    # (B, C, Ha*Wa) x (B, C, Hb*Wb) -> (B, Ha*Wa, Hb*Wb) cosine similarities -> (B, Ha, Wa, Hb, Wb), not yet clamped
    corrs = [torch.bmm(l2_normalize(q).transpose(1, 2), l2_normalize(s)).view(
        q.shape[0], *q.shape[-2:], *s.shape[-2:]) for q, s in zip(query_feats, support_feats)]
    out, start = [], 0
    for size in group_sizes:
        stacked = torch.stack(corrs[start:start + size], dim=3)  # (B, Ha, Wa, n, Hb, Wb)
        out.append(clamp_min_zero(stacked).permute(0, 3, 1, 2, 4, 5))
        start += size
    return out[::-1]


def transpose_correlation(corr: torch.Tensor) -> torch.Tensor:
    """Swap the two images' roles: (B, n, Ha, Wa, Hb, Wb) -> (B, n, Hb, Wb, Ha, Wa) (a view)."""
    return corr.permute(0, 1, 4, 5, 2, 3)
