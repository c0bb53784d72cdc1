"""Numbers and names shared by the data loaders, the model side and the pictures, each defined here once."""
from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the backbones' input normalisation, as released
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_LABEL = 255  # PASCAL's object-boundary label, left out of every IoU count (as released)

# The prior recipes (docs/priors.md) by name, each with the id a CAM folder's cam_manifest.json records as its
# ``recipe`` (bump the version after the slash when a recipe's computation changes). gradcam-rn50 keeps the id its
# folders had before the recipes had names, so that they still resume; ``imported``: priors made elsewhere.
PRIOR_RECIPE_IDS = {"gradcam-rn50": "clip-rn50-gradcam-released/1", "clip-es": "clip-es/1", "imported": "imported/1"}
DEFAULT_PRIOR = "gradcam-rn50"  # the released recipe
