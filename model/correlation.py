"""Multi-layer cosine correlation (HSNet's hypercorrelation), clamped at zero.

For one pair of feature maps ``q`` (B, C, Ha, Wa) and ``s`` (B, C, Hb, Wb):

    corr[b, i, j, k, l] = max(0, <q[b, :, i, j], s[b, :, k, l]> / ((|q[b, :, i, j]| + eps) (|s[b, :, k, l]| + eps)))

with eps = 1e-5 added to each norm, as released. The layers of one group (same stride) are stacked as
channels of a 4D tensor: (B, n_layers, Ha, Wa, Hb, Wb).
"""
from __future__ import annotations

from typing import Sequence

import torch

EPS = 1e-5


def l2_normalize(feat: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H*W), each position divided by (its channel L2 norm + eps)."""
    flat = feat.flatten(2)
    return flat / (flat.norm(dim=1, p=2, keepdim=True) + eps)


def cosine_correlation(query_unit: torch.Tensor, support_unit: torch.Tensor, hw_query: tuple[int, int],
                       hw_support: tuple[int, int]) -> torch.Tensor:
    """Clamped correlation of two normalised feature maps.

    Args:
        query_unit: (B, C, Ha*Wa) from :func:`l2_normalize`.
        support_unit: (B, C, Hb*Wb) from :func:`l2_normalize`.
        hw_query: (Ha, Wa); hw_support: (Hb, Wb).
    Returns:
        (B, Ha, Wa, Hb, Wb), values in [0, 1].
    """
    bsz = query_unit.shape[0]
    corr = torch.bmm(query_unit.transpose(1, 2), support_unit)  # (B, Ha*Wa, Hb*Wb)
    return corr.clamp(min=0).view(bsz, *hw_query, *hw_support)


def group_correlations(corrs: Sequence[torch.Tensor], group_sizes: Sequence[int]) -> list[torch.Tensor]:
    """Stack per-layer correlations into the pyramid, deepest group first.

    Args:
        corrs: per-layer (B, Ha, Wa, Hb, Wb), shallow to deep, ``sum(group_sizes)`` of them.
        group_sizes: layers in the l2, l3, l4 groups.
    Returns:
        ``[corr_l4, corr_l3, corr_l2]``, each (B, n_layers, Ha, Wa, Hb, Wb) of that group's stride.
    """
    out = []
    start = 0
    for size in group_sizes:
        out.append(torch.stack(list(corrs[start:start + size]), dim=1))
        start += size
    return out[::-1]


def multilayer_correlation(query_feats: Sequence[torch.Tensor], support_feats: Sequence[torch.Tensor],
                           group_sizes: Sequence[int]) -> list[torch.Tensor]:
    """HSNet's ``Correlation.multilayer_correlation``: ``[corr_l4, corr_l3, corr_l2]``.

    Args:
        query_feats / support_feats: per-layer (B, C_l, H_l, W_l), shallow to deep.
        group_sizes: layers in the l2, l3, l4 groups.
    """
    corrs = [cosine_correlation(l2_normalize(q), l2_normalize(s), q.shape[-2:], s.shape[-2:])
             for q, s in zip(query_feats, support_feats)]
    return group_correlations(corrs, group_sizes)


def transpose_correlation(corr: torch.Tensor) -> torch.Tensor:
    """Swap the two images' roles: (B, n, Ha, Wa, Hb, Wb) -> (B, n, Hb, Wb, Ha, Wa) (a view)."""
    return corr.permute(0, 1, 4, 5, 2, 3)
