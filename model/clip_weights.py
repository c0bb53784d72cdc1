"""What ``--clip-weights`` accepts (the CAM scripts, predict.py, demo.py), without importing CLIP itself.

A CLIP RN50 file (OpenAI's ``RN50.pt`` or a state dict with its keys), or ``random`` / ``random:SEED``: RN50
built from random weights (:func:`model.clip_gradcam.random_clip_state_dict`), so that the pipeline runs
offline; its Grad-CAM priors then carry no class information, which every use says loudly.
"""
from __future__ import annotations

import os
from typing import Optional, Union

from common.errors import UserInputError

__all__ = ["CLIP_WEIGHTS_HELP", "RANDOM_WEIGHTS", "ClipWeightsError", "random_clip_seed"]

RANDOM_WEIGHTS = "random"
CLIP_WEIGHTS_HELP = ("OpenAI CLIP RN50.pt (TorchScript) or a state dict with its keys (default: ~/.cache/clip/RN50.pt, "
                     "downloaded when missing and online); 'random' (or 'random:SEED') builds RN50 from random "
                     "weights to run offline, but its priors then carry NO class information (a file named "
                     "'random': ./random)")


class ClipWeightsError(UserInputError, RuntimeError):
    """The CLIP weights could not be found, downloaded or understood."""


def random_clip_seed(weights: Optional[Union[str, os.PathLike]]) -> Optional[int]:
    """The seed of a ``--clip-weights`` value asking for random weights (``random``: 0, ``random:SEED``); None
    for a file (or None). Raises ClipWeightsError for ``random:`` followed by something else than an integer."""
    if not isinstance(weights, str):
        return None
    if weights == RANDOM_WEIGHTS:
        return 0
    if not weights.startswith(RANDOM_WEIGHTS + ":"):
        return None
    try:
        return int(weights[len(RANDOM_WEIGHTS) + 1:])
    except ValueError:
        raise ClipWeightsError(f"--clip-weights {weights}: expected 'random' or 'random:SEED' with an integer "
                               f"seed (a file of that name: ./{weights})") from None
