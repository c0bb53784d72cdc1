"""How the current masks enter the correlations: the released formulation and the paper's, side by side.

Both are built once per forward from the (unmasked) backbone features of the query and the support, and then
called once per stage with the two current foreground masks (the CAMs before the first stage, the predicted
foreground probabilities after). Each call returns the two correlation pyramids of that stage::

    correlate = MASKING_MODES[mode](query_feats, support_feats, group_sizes)
    corr_query, corr_support = correlate(query_mask, support_mask)   # stage 1: the CAMs
    corr_query, corr_support = correlate(prob_query, prob_support)   # stage 2, 3, ...: the predictions

``corr_query`` pyramids have the query's positions as dims 2-3 (they predict the query mask), ``corr_support``
the support's (they predict the support mask); see :mod:`model.correlation` for the pyramid layout.

With F_q, F_s the feature lists, M_q, M_s the current masks (resized to each layer) and C(A, B) HSNet's
multi-layer cosine correlation:

* :class:`ReleasedMasking` (``--masking released``, the default; the released checkpoints were trained so)::

      stage 1:   F_q <- F_q * M_s,   F_s <- F_s * M_q          (each image masked with the *other* CAM)
      stage t>1: F_q <- F_q * M_q,   F_s <- F_s * M_s          (own prediction, on the already-masked lists)
      corr_query = C(F_q, F_s),   corr_support = corr_query with the two images' dims swapped

  The released ``mask_feature`` rewrote its feature lists in place, so the masks compound over the stages;
  here the masked lists are new tensors kept by the object, and no input is modified.
* :class:`PaperMasking` (``--masking paper``, the formulation of the paper)::

      corr_query = C(F_q, F_s * M_s),   corr_support = C(F_s, F_q * M_q)    (nothing compounds)

Both are built once per forward, as above, or replayed in one go from the masks of every stage so far
(:func:`correlate_stage`, used by ``--checkpoint-learner``, which keeps only the unmasked features and the
masks for backward and runs the masking again there). Inside a :class:`~model.recompute.RecomputeScope`, the
masked features are registered as the products they are (the features and the masks are kept instead).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from common.resize import resize_bilinear
from model.correlation import multilayer_correlation, transpose_correlation
from model.recompute import recomputable

Pyramid = list[torch.Tensor]
MaskPair = tuple[torch.Tensor, torch.Tensor]  # (query mask, support mask), each (B, h, w)

__all__ = ["MASKING_MODES", "PaperMasking", "ReleasedMasking", "correlate_stage", "mask_features"]


def mask_features(feats: Sequence[torch.Tensor], mask: torch.Tensor) -> list[torch.Tensor]:
    """Multiply every feature map by ``mask`` resized to its resolution (new tensors, registered as the products
    they are, see :mod:`model.recompute`; inputs untouched).

    Args:
        feats: per-layer (B, C_l, H_l, W_l).
        mask: (B, h, w) foreground map (CAM or probability).
    """
    mask = mask.unsqueeze(1)
    resized: dict[tuple[int, int], torch.Tensor] = {}
    out = []
    for feat in feats:
        size = tuple(feat.shape[-2:])
        if size not in resized:
            resized[size] = resize_bilinear(mask.to(feat.dtype), size)
        out.append(recomputable(feat * resized[size], torch.mul, feat, resized[size]))
    return out


class _Masking:
    """The features of one forward, kept for the stages; subclasses say how the masks enter the correlations.

    Args:
        query_feats / support_feats: per-layer backbone features (B, C_l, H_l, W_l), shallow to deep.
        group_sizes: layers in the l2, l3, l4 groups.
    """

    def __init__(self, query_feats: Sequence[torch.Tensor], support_feats: Sequence[torch.Tensor],
                 group_sizes: Sequence[int]) -> None:
        self.query_feats, self.support_feats = list(query_feats), list(support_feats)
        self.group_sizes = group_sizes

    def __call__(self, query_mask: torch.Tensor, support_mask: torch.Tensor) -> tuple[Pyramid, Pyramid]:
        """(B, h, w) masks -> ``(corr_query, corr_support)`` of this stage."""
        raise NotImplementedError


class ReleasedMasking(_Masking):
    """The released code's masking: masks compound on the feature lists, one correlation serves both images."""

    first_stage = True

    def apply_masks(self, query_mask: torch.Tensor, support_mask: torch.Tensor) -> None:
        """Multiply this stage's masks onto the kept feature lists (the compounding)."""
        if self.first_stage:  # query features x support CAM, support features x query CAM
            query_mask, support_mask = support_mask, query_mask
            self.first_stage = False
        # later stages: each image's own new mask, multiplied onto the already-masked features
        self.query_feats = mask_features(self.query_feats, query_mask)
        self.support_feats = mask_features(self.support_feats, support_mask)

    def __call__(self, query_mask: torch.Tensor, support_mask: torch.Tensor) -> tuple[Pyramid, Pyramid]:
        self.apply_masks(query_mask, support_mask)
        corr_query = multilayer_correlation(self.query_feats, self.support_feats, self.group_sizes)
        return corr_query, [transpose_correlation(corr) for corr in corr_query]


class PaperMasking(_Masking):
    """The paper's masking: each prediction correlates its image with the other image masked by its current mask."""

    def __call__(self, query_mask: torch.Tensor, support_mask: torch.Tensor) -> tuple[Pyramid, Pyramid]:
        masked_support = mask_features(self.support_feats, support_mask)
        masked_query = mask_features(self.query_feats, query_mask)
        corr_query = multilayer_correlation(self.query_feats, masked_support, self.group_sizes)
        corr_support = multilayer_correlation(self.support_feats, masked_query, self.group_sizes)
        return corr_query, corr_support


MaskingFactory = Callable[..., Callable[[torch.Tensor, torch.Tensor], tuple[Pyramid, Pyramid]]]
MASKING_MODES: dict[str, MaskingFactory] = {"released": ReleasedMasking, "paper": PaperMasking}


def correlate_stage(mode: str, query_feats: Sequence[torch.Tensor], support_feats: Sequence[torch.Tensor],
                    group_sizes: Sequence[int], masks: Sequence[MaskPair]) -> tuple[Pyramid, Pyramid]:
    """The correlations of stage ``len(masks)`` from the unmasked features and the masks of every stage so far
    (the CAMs first, then each stage's predicted probabilities): the same values as calling the ``mode``'s
    masking object once per stage."""
    correlate = MASKING_MODES[mode](query_feats, support_feats, group_sizes)
    if isinstance(correlate, ReleasedMasking):  # replay the compounding of the earlier stages' masks
        for pair in masks[:-1]:
            correlate.apply_masks(*pair)
    return correlate(*masks[-1])
