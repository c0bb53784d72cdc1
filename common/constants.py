"""Numbers and names shared by the data loaders, the model side, the priors and the pictures, each defined here
once."""
from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the backbones' input normalisation, as released
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_LABEL = 255  # PASCAL's object-boundary label, left out of every IoU count (as released)
IMG_SIZE = 400  # the released input side (square), train.py / test.py / predict.py --img-size
FEATURE_STRIDE = 8  # the backbone's l2 features, where the CAMs and IMR's state live, are 1/8 of the input side
CAM_SIZE = IMG_SIZE // FEATURE_STRIDE  # 50: the side of the released CAM files, the IMR state at 400 px
