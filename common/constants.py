"""Numbers and names shared by the data loaders, the model side and the pictures, each defined here once."""
from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the backbones' input normalisation, as released
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_LABEL = 255  # PASCAL's object-boundary label, left out of every IoU count (as released)
