"""Seeded weights and inputs for the model's golden tests (tests/golden/model_golden.pt).

The golden numbers were measured by running the released IMR-HSNet model (in a scratch folder, with these
weights loaded into it) and checked to agree with ours within 1e-4; see tests/test_model_golden.py. Both the
weights and the inputs are regenerated here from seeds, so the tests need neither the released code nor
any weight file.
"""
from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F


def _generator(seed: int, key: str) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))


def random_state_dict(template: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Deterministic, well-scaled random values for every entry of a released-layout state dict.

    Conv/linear weights ~ He-normal; norm scales ~ 1 + 0.1 N (ResNet ``bn3`` scaled by 0.2 so the residual
    stream stays O(1) without ImageNet statistics); biases and BN running means ~ 0.05 N; running variances
    ~ 1 + U(0, 0.2); the learned IMR state ~ 0.5 N; classifier heads (never run) zero.
    """
    out: dict[str, torch.Tensor] = {}
    for key, ref in template.items():
        if not ref.is_floating_point():
            out[key] = ref.clone()
            continue
        shape = ref.shape
        if key.startswith(("backbone.classifier.", "backbone.fc.")):
            out[key] = torch.zeros(shape)
            continue
        g = _generator(seed, key)
        if key.endswith("running_var"):
            val = 1 + 0.2 * torch.rand(shape, generator=g)
        elif key.endswith("running_mean") or key.endswith("bias"):
            val = 0.05 * torch.randn(shape, generator=g)
        elif key == "state":
            val = 0.5 * torch.randn(shape, generator=g)
        elif len(shape) >= 2:
            fan_in = shape[1:].numel()
            val = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        else:  # BatchNorm / GroupNorm scale
            val = 1 + 0.1 * torch.randn(shape, generator=g)
            if ".bn3." in key:
                val = 0.2 * val
        out[key] = val.to(ref.dtype)
    return out


def make_inputs(seed: int, bsz: int, size: int = 400, nshot: int = 1) -> dict[str, torch.Tensor]:
    """Images ~ N(0, 1), CAMs ~ smooth [0, 1] maps at size/8, masks = smooth blobs thresholded at 0.5.

    Returns a released-style batch dict: query_img (B, 3, S, S), support_imgs (B, K, 3, S, S), query_cam
    (B, S/8, S/8), support_cams (B, K, S/8, S/8), query_mask (B, S, S), support_masks (B, K, S, S).
    """
    g = torch.Generator().manual_seed(seed)
    side = size // 8

    def smooth(n: int, out: int) -> torch.Tensor:
        return F.interpolate(torch.rand(n, 1, 6, 6, generator=g), (out, out), mode="bilinear",
                             align_corners=True)[:, 0]

    query_img = torch.randn(bsz, 3, size, size, generator=g)
    support_imgs = torch.randn(bsz, nshot, 3, size, size, generator=g)
    query_cam = smooth(bsz, side)
    support_cams = smooth(bsz * nshot, side).view(bsz, nshot, side, side)
    query_mask = (smooth(bsz, size) > 0.5).float()
    support_masks = (smooth(bsz * nshot, size) > 0.5).float().view(bsz, nshot, size, size)
    return {"query_img": query_img, "support_imgs": support_imgs, "query_cam": query_cam,
            "support_cams": support_cams, "query_mask": query_mask, "support_masks": support_masks}
