"""IMR-HSNet: HSNet's hypercorrelation encoder refined by an iterative mutual refinement (IMR) cell.

Per episode (a query and one support image, each with a CAM of the target class):

1. Frozen backbone features of both images (``model.backbone``); a mid-level feature per image (the sum of
   the l3-group features resized to the l2 resolution, 1x1-projected to 512 channels for ResNets).
2. ``stage`` times, for the query and symmetrically for the support:
   masked hypercorrelation -> 4D-conv encoder (``hpn_learner``) -> IMR cell (``imr.imr_step``) on
   [current mask, encoding, mid feature, state] -> decoder on (state + encoding), upsampled x2 ->
   residual head on [logits, current mask] -> logits at H/4. The foreground probability becomes the next
   stage's mask.
3. Training loss: sum over stages of CE(query) + CE(support), logits resized to the input size.

Masking modes (``masking=``, see :mod:`model.masking` for both side by side): ``"released"`` (default; the
released checkpoints were trained this way: masks compound over the stages) and ``"paper"`` (the paper's
formulation).

Memory for backward (numerics unchanged, see :mod:`model.recompute` and ``benchmarks/NOTES.md``): a training
forward runs inside a :class:`~model.recompute.RecomputeScope`, so cheap activations (GroupNorm + ReLU outputs,
masked features, concatenations) are rebuilt in backward instead of kept; with ``checkpoint_learner`` the
correlations and the 4D-convolution learner of each stage are run again in backward (only the features and the
masks are kept).

Sizes come from the input: the l2 features (H/8) set the correlation/IMR resolution and the logits are
at twice that (H/4); at 400 px these are the released 50 and 100. The learned initial state is a
(1, 128, 50, 50) parameter (released shape, so checkpoints load); at other resolutions it is resized
bilinearly (align_corners=True) to the feature size, which is the identity at 400 px. CAMs whose size
differs from the feature size are resized the same way before entering the IMR cell.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from common.constants import CAM_SIZE
from common.resize import resize_bilinear
from model.backbone import WeightsArg, build_backbone, get_spec
from model.imr import HIDDEN, STATE_CHANNELS, Gate, imr_step, make_gate_convs
from model.learner import CHANNELS, HPNLearner
from model.masking import MASKING_MODES, MaskPair, correlate_stage
from model.recompute import RecomputeScope, checkpoint, recomputable

RELEASED_FEATURE_SIZE = CAM_SIZE  # the state parameter's spatial size (400-pixel inputs: 400 / 8)


@dataclass
class _Branch:
    """One image's running state through the stages (the query's or the support's)."""

    mid: torch.Tensor    # (B, 512, h, w) mid-level feature
    mask: torch.Tensor   # (B, 1, h, w) current mask entering the IMR cell and the residual head
    state: torch.Tensor  # (B, 128, h, w) hidden state of the IMR cell


class IMRHSNet(nn.Module):
    """IMR-HSNet with the released state-dict layout.

    Args:
        backbone: ``vgg16``, ``resnet50`` or ``resnet101``.
        backbone_weights: ``"imagenet"``, a local torchvision state-dict path, or ``"none"`` / ``None``.
        masking: ``"released"`` or ``"paper"`` (see the module docstring).
        use_original_imgsize: as released: evaluation logits stay at the decoder resolution (and are resized to
            the original query size in :meth:`predict_mask_nshot`); the training loss is then computed at
            the masks' resolution.
        checkpoint_learner: in training, run each stage's correlations and 4D-convolution learner again in
            backward instead of keeping their activations (``--checkpoint-learner``; same gradients).
        recompute_activations: rebuild cheap activations in backward (the default; ``False`` keeps them, for
            comparisons).
    """

    def __init__(self, backbone: str, *, backbone_weights: WeightsArg = "imagenet", masking: str = "released",
                 use_original_imgsize: bool = False, checkpoint_learner: bool = False,
                 recompute_activations: bool = True) -> None:
        super().__init__()
        if masking not in MASKING_MODES:
            raise ValueError(f"masking must be one of {tuple(MASKING_MODES)}, got {masking!r}")
        spec = get_spec(backbone)
        self.backbone_type = backbone
        self.masking = masking
        self.use_original_imgsize = use_original_imgsize
        self.checkpoint_learner = checkpoint_learner
        self.recompute_activations = recompute_activations
        self.channels_last = False
        self._extract = spec.extract
        self.group_sizes = spec.group_sizes  # l2, l3, l4

        # module creation order as released (same random init for the same seed)
        self.backbone = build_backbone(backbone, backbone_weights)
        if spec.mid_channels != HIDDEN:
            self.conv1024_512 = nn.Conv2d(spec.mid_channels, HIDDEN, kernel_size=1)
        self.hpn_learner = HPNLearner(list(reversed(spec.group_sizes)))
        self.cross_entropy_loss = nn.CrossEntropyLoss()

        in_channels = 1 + CHANNELS[2] + HIDDEN + STATE_CHANNELS  # [cam, encoding, mid, state] = 769
        self.state = nn.Parameter(torch.zeros(1, STATE_CHANNELS, RELEASED_FEATURE_SIZE, RELEASED_FEATURE_SIZE))
        self.convz0, self.convz1, self.convz2 = make_gate_convs(in_channels)
        self.convr0, self.convr1, self.convr2 = make_gate_convs(in_channels)
        self.convh0, self.convh1, self.convh2 = make_gate_convs(in_channels)

        c1, c2, c3 = CHANNELS
        self.decoder1 = nn.Sequential(nn.Conv2d(c3, c3, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(c3, c2, 3, padding=1), nn.ReLU())
        self.decoder2 = nn.Sequential(nn.Conv2d(c2, c2, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(c2, 2, 3, padding=1))
        self.res = nn.Sequential(nn.Conv2d(3, 10, kernel_size=1), nn.GELU(), nn.Conv2d(10, 2, kernel_size=1))

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "IMRHSNet":
        """Set training mode; the frozen backbone always stays in eval mode (BatchNorm statistics fixed)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def train_mode(self) -> "IMRHSNet":
        """The released ``train_mode()``: learner trains, backbone stays in eval mode."""
        return self.train(True)

    def use_channels_last(self) -> "IMRHSNet":
        """Keep the 2D convolutions' weights (backbone, IMR cell, decoder) and the input images in channels_last
        memory order (used with ``--amp`` on CUDA, where cuDNN's tensor-core kernels work in that order). The
        4D learner is not affected; the state-dict values are the same."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d) and not name.startswith("hpn_learner"):
                module.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def compile_learner(self, **kwargs: Any) -> "IMRHSNet":
        """``torch.compile`` the 4D-convolution learner in place (``--compile``): the state-dict keys, and so the
        checkpoints, stay as they are. ``kwargs`` go to :meth:`torch.nn.Module.compile`. The compiled learner
        registers nothing with the recompute scope (inductor's own partitioner decides what backward recomputes)."""
        self.hpn_learner.compile(**kwargs)
        self._learner_compiled = True
        return self

    def encode(self, corr: Sequence[torch.Tensor]) -> torch.Tensor:
        """The 4D-convolution learner on one correlation pyramid -> (B, 128, h, w)."""
        if not getattr(self, "_learner_compiled", False):
            return self.hpn_learner(corr)
        with RecomputeScope(enabled=False):  # see compile_learner
            return self.hpn_learner(corr)

    # ------------------------------------------------------------------ pieces
    def extract_features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features (no gradient), shallow to deep: see :mod:`model.backbone`."""
        with torch.no_grad():
            return self._extract(self.backbone, img)

    def mid_feature(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum of the l3-group features resized to the l2 resolution, projected to 512 channels for ResNets.

        (B, C_l3, H/16, W/16) x n_l3 -> (B, 512, H/8, W/8). The released code sums features 3..5 (VGG16) and
        4..9 (ResNet50), i.e. the l3 group; ResNet101 (never run by the released code) uses its whole l3 group.
        """
        n2, n3, _ = self.group_sizes
        with torch.no_grad():
            mid = feats[n2]
            for feat in feats[n2 + 1:n2 + n3]:
                mid = mid + feat
            mid = resize_bilinear(mid, feats[0].shape[-2:])
        if hasattr(self, "conv1024_512"):
            mid = self.conv1024_512(mid)
        return mid

    def initial_state(self, bsz: int, size: Sequence[int]) -> torch.Tensor:
        """The learned state (1, 128, 50, 50) expanded to (B, 128, h, w), resized when (h, w) != (50, 50)."""
        state = self.state
        if tuple(state.shape[-2:]) != tuple(size):
            state = resize_bilinear(state, size)
        return state.expand(bsz, -1, -1, -1)

    def imr(self, cam: torch.Tensor, encoded: torch.Tensor, mid: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One IMR cell update (see :mod:`model.imr`); all (B, ., h, w)."""
        return imr_step(cam, encoded, mid, state,
                        z=Gate(self.convz0, self.convz1, self.convz2),
                        r=Gate(self.convr0, self.convr1, self.convr2),
                        h=Gate(self.convh0, self.convh1, self.convh2))

    def decode(self, x: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
        """(state + encoding) (B, 128, h, w) and mask (B, 1, h, w) -> logits (B, 2, 2h, 2w).

        The upsampled decoder feature is registered as the resize it is (see :mod:`model.recompute`)."""
        x = self.decoder1(x)
        size = (2 * x.shape[-2], 2 * x.shape[-1])
        logit = self.decoder2(recomputable(resize_bilinear(x, size), resize_bilinear, x, size))
        return self.res(torch.cat([logit, resize_bilinear(cam, logit.shape[-2:])], dim=1))

    def compute_objective(self, logit_mask: torch.Tensor, gt_mask: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of (B, 2, H, W) logits against a (B, H, W) 0/1 mask (or its int64 (B, H*W) flattening,
        which the loss's backward keeps: pass it once per image and stage), averaged over pixels."""
        bsz = logit_mask.shape[0]
        target = gt_mask if gt_mask.dtype == torch.long and gt_mask.dim() == 2 else gt_mask.reshape(bsz, -1).long()
        return self.cross_entropy_loss(logit_mask.reshape(bsz, 2, -1), target)

    def start_branch(self, feats: Sequence[torch.Tensor], cam: torch.Tensor) -> _Branch:
        """An image's state before the first stage: mid feature, CAM at the feature size, initial state.

        Args:
            feats: the image's backbone features; cam: (B, h', w') its CAM (resized when h' != H/8).
        """
        size = tuple(feats[0].shape[-2:])
        mask = cam.unsqueeze(1)
        if tuple(mask.shape[-2:]) != size:
            mask = resize_bilinear(mask, size)
        return _Branch(mid=self.mid_feature(feats), mask=mask, state=self.initial_state(feats[0].shape[0], size))

    def refine(self, branch: _Branch, corr: Optional[Sequence[torch.Tensor]],
               encoded: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One stage for one image: encode its correlation, update its IMR state, decode its logits.

        Args:
            branch: the image's running state (its ``state`` is replaced by the new one).
            corr: the image's correlation pyramid of this stage (its positions as dims 2-3).
            encoded: the learner's output when it was computed already (``checkpoint_learner``); then ``corr``
                is not used.
        Returns:
            logits (B, 2, 2h, 2w).
        """
        if encoded is None:
            encoded = self.encode(corr)
        branch.state = self.imr(branch.mask, encoded, branch.mid, branch.state)
        decoder_input = recomputable(branch.state + encoded, torch.add, branch.state, encoded)
        return self.decode(decoder_input, branch.mask)

    def encode_stage(self, query_feats: Sequence[torch.Tensor], support_feats: Sequence[torch.Tensor],
                     masks: Sequence[MaskPair]) -> tuple[torch.Tensor, torch.Tensor]:
        """Both images' learner encodings (B, 128, h, w) of stage ``len(masks)``, from the unmasked features and
        the masks of every stage so far (see :func:`model.masking.correlate_stage`)."""
        corr_q, corr_s = correlate_stage(self.masking, query_feats, support_feats, self.group_sizes, masks)
        return self.encode(corr_q), self.encode(corr_s)

    def _checkpointed_encodings(self, query_feats: Sequence[torch.Tensor], support_feats: Sequence[torch.Tensor],
                                masks: Sequence[MaskPair]) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`encode_stage` under activation checkpointing: the features and masks are kept, the rest runs
        again in backward (inside a recompute scope, to keep that second run's peak low too)."""
        n_q, n_s = len(query_feats), len(support_feats)

        def run(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            qf, sf, flat_masks = tensors[:n_q], tensors[n_q:n_q + n_s], tensors[n_q + n_s:]
            pairs = [(flat_masks[i], flat_masks[i + 1]) for i in range(0, len(flat_masks), 2)]
            with RecomputeScope(enabled=torch.is_grad_enabled() and self.recompute_activations):
                return self.encode_stage(qf, sf, pairs)

        inputs = [*query_feats, *support_feats, *(mask for pair in masks for mask in pair)]
        return checkpoint(run, inputs, [p for p in self.hpn_learner.parameters() if p.requires_grad])

    # ------------------------------------------------------------------ forward
    def forward(self, query_img: torch.Tensor, support_img: torch.Tensor, support_cam: torch.Tensor,
                query_cam: torch.Tensor, query_mask: Optional[torch.Tensor] = None,
                support_mask: Optional[torch.Tensor] = None, stage: int = 2):
        """One-shot forward: ``stage`` rounds of refining the query and the support mask together.

        Args:
            query_img, support_img: (B, 3, H, W).
            support_cam, query_cam: (B, h, w) CAMs (h = H/8 at the released sizes).
            query_mask, support_mask: (B, H, W) 0/1 ground truth; given -> training outputs with the loss.
            stage: number of IMR refinement steps (>= 1).
        Returns:
            training: ``(logit_q, logit_s, loss)``, logits (B, 2, H, W) of the last stage, loss summed over
            stages; evaluation: ``(logit_q, logit_s)`` at (H, W) (at H/4 with ``use_original_imgsize``).
        """
        if stage < 1:
            raise ValueError(f"stage must be >= 1, got {stage}")
        if query_mask is not None and support_mask is None:
            raise ValueError("training forward needs support_mask along with query_mask")
        if self.channels_last:
            query_img = query_img.contiguous(memory_format=torch.channels_last)
            support_img = support_img.contiguous(memory_format=torch.channels_last)
        grad = torch.is_grad_enabled()
        with RecomputeScope(enabled=grad and self.recompute_activations):
            return self._stages(query_img, support_img, support_cam, query_cam, query_mask, support_mask, stage,
                                checkpointed=grad and self.checkpoint_learner)

    def _stages(self, query_img: torch.Tensor, support_img: torch.Tensor, support_cam: torch.Tensor,
                query_cam: torch.Tensor, query_mask: Optional[torch.Tensor], support_mask: Optional[torch.Tensor],
                stage: int, checkpointed: bool):
        """The body of :meth:`forward` (see there)."""
        training = query_mask is not None
        query_feats = self.extract_features(query_img)
        support_feats = self.extract_features(support_img)
        query, support = self.start_branch(query_feats, query_cam), self.start_branch(support_feats, support_cam)
        masks: list[MaskPair] = [(query_cam, support_cam)]  # first stage: the CAMs
        if checkpointed:
            correlate = None
        else:
            correlate = MASKING_MODES[self.masking](query_feats, support_feats, self.group_sizes)
            corr_q, corr_s = correlate(query_cam, support_cam)
        if training:  # int64 targets, made once (the loss's backward keeps them)
            target_q = query_mask.reshape(query_mask.shape[0], -1).long()
            target_s = support_mask.reshape(support_mask.shape[0], -1).long()

        losses: Any = 0
        for ss in range(stage):
            if checkpointed:
                encoded_q, encoded_s = self._checkpointed_encodings(query_feats, support_feats, masks)
                logit_q = self.refine(query, None, encoded=encoded_q)
                logit_s = self.refine(support, None, encoded=encoded_s)
            else:
                logit_q = self.refine(query, corr_q)
                logit_s = self.refine(support, corr_s)
            if training:  # the loss sees the logits at the masks' size; the next stage keeps them at H/4
                out_q = resize_bilinear(logit_q, query_mask.shape[-2:])
                out_s = resize_bilinear(logit_s, support_mask.shape[-2:])
                losses = losses + self.compute_objective(out_q, target_q) + self.compute_objective(out_s, target_s)
            if ss != stage - 1:  # the foreground probabilities become the next stage's masks
                prob_q, prob_s = _foreground(logit_q), _foreground(logit_s)
                if correlate is not None:
                    corr_q, corr_s = correlate(prob_q, prob_s)
                masks.append((prob_q, prob_s))
                query.mask = resize_bilinear(prob_q.unsqueeze(1), query.mask.shape[-2:])
                support.mask = resize_bilinear(prob_s.unsqueeze(1), support.mask.shape[-2:])

        if training:
            return out_q, out_s, losses
        if not self.use_original_imgsize:
            logit_q = resize_bilinear(logit_q, support_img.shape[-2:])
            logit_s = resize_bilinear(logit_s, support_img.shape[-2:])
        return logit_q, logit_s

    @torch.no_grad()
    def predict_mask_nshot(self, batch: Mapping[str, Any], nshot: int, stage: int) -> torch.Tensor:
        """K-shot prediction as released: per-shot argmax, summed, then a 0.5 vote relative to the max count.

        Args:
            batch: ``query_img`` (B, 3, H, W), ``support_imgs`` (B, K, 3, H, W), ``support_cams`` (B, K, h, w),
                ``query_cam`` (B, h, w); with ``use_original_imgsize`` also ``org_query_imsize`` ((W, H), B = 1).
        Returns:
            1-shot: the (B, H, W) argmax (int64); K-shot: the (B, H, W) 0/1 vote (float).
        """
        vote: Any = 0
        for s_idx in range(nshot):
            logit_q, _ = self(query_img=batch["query_img"], support_img=batch["support_imgs"][:, s_idx],
                              support_cam=batch["support_cams"][:, s_idx], query_cam=batch["query_cam"], stage=stage)
            if self.use_original_imgsize:
                logit_q = resize_bilinear(logit_q, _original_size(batch["org_query_imsize"]))
            vote = vote + logit_q.argmax(dim=1)
            if nshot == 1:
                return vote
        bsz = vote.shape[0]
        max_vote = vote.reshape(bsz, -1).max(dim=1).values.clamp(min=1).view(bsz, 1, 1)
        return (vote.float() / max_vote >= 0.5).float()


def _foreground(logits: torch.Tensor) -> torch.Tensor:
    """(B, 2, h, w) logits -> (B, h, w) foreground probability."""
    return logits.softmax(dim=1)[:, 1]


def _original_size(org_imsize: Any) -> tuple[int, int]:
    """(H, W) from the batch's collated ``org_query_imsize`` ((W, H) per episode; batch size 1 as released)."""
    width, height = org_imsize[0], org_imsize[1]
    return int(torch.as_tensor(height).reshape(-1)[0]), int(torch.as_tensor(width).reshape(-1)[0])
