"""The IMR cell: a GRU-like update of a 128-channel state from [CAM, encoded correlation, mid-level feature].

With x = [cam (1), encoded (128), mid (512), state (128)] (769 channels) and each gate g in {z, r, h} computed as

    g(x) = cat(conv_g1(y[:, :256]), conv_g2(y[:, 256:])),   y = conv_g0(x)   (1x1 conv 769 -> 512, then two
                                                                             grouped 3x3 convs 256 -> 64 each)
the cell is

    z = sigmoid(g_z(x)),  r = sigmoid(g_r(x)),  h = tanh(g_h([cam, encoded, mid, r * state]))
    state' = (1 - z) * state + z * h

The convolutions live on the model as ``convz0..2``, ``convr0..2``, ``convh0..2`` (the released state-dict
keys); :func:`imr_step` takes them as three :class:`Gate` triples.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from model.recompute import recomputable, recomputed

STATE_CHANNELS = 128
HIDDEN = 512
GROUPS = 8


class Gate(NamedTuple):
    """One split gate: a 1x1 conv to ``HIDDEN`` channels, then a grouped 3x3 conv per half."""

    conv0: nn.Module
    conv1: nn.Module
    conv2: nn.Module

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """(B, 769, h, w) -> (B, 128, h, w)."""
        y = self.conv0(x)
        first, second = torch.split(y, y.shape[1] // 2, dim=1)  # backward: one cat, not two zero-fills
        return torch.cat([self.conv1(first), self.conv2(second)], dim=1)


def make_gate_convs(in_channels: int) -> tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d]:
    """The three convolutions of one gate (released shapes: 769 -> 512 1x1; 256 -> 64 3x3, groups 8, twice)."""
    half_out = STATE_CHANNELS // 2
    return (nn.Conv2d(in_channels, HIDDEN, kernel_size=1, padding=0),
            nn.Conv2d(HIDDEN // 2, half_out, kernel_size=3, padding=1, groups=GROUPS),
            nn.Conv2d(HIDDEN // 2, half_out, kernel_size=3, padding=1, groups=GROUPS))


def imr_step(cam: torch.Tensor, encoded: torch.Tensor, mid_feat: torch.Tensor, state: torch.Tensor, *,
             z: Gate, r: Gate, h: Gate) -> torch.Tensor:
    """One IMR update.

    Args:
        cam: (B, 1, h, w) current foreground map (CAM at the first stage, then the predicted probability).
        encoded: (B, 128, h, w) 4D-conv encoding of the correlation.
        mid_feat: (B, 512, h, w) mid-level backbone feature.
        state: (B, 128, h, w) hidden state.
    Returns:
        the new state (B, 128, h, w).

    The two 769-channel concatenations and ``1 - update`` are registered with the active recompute scope (their
    parts are kept instead; the mid-level feature once for every stage).
    """
    x = _concat(cam, encoded, mid_feat, state)
    update = torch.sigmoid(z(x))
    reset = torch.sigmoid(r(x))
    candidate = torch.tanh(h(_concat(cam, encoded, mid_feat, reset * state)))
    return recomputable(1 - update, torch.rsub, update, 1) * state + update * candidate  # rsub(u, 1): 1 - u


@recomputed
def _concat(*parts: torch.Tensor) -> torch.Tensor:
    return torch.cat(parts, dim=1)
