"""CLIP Grad-CAM priors of every FSS-1000 image for its own class ("a photo of a {name}", underscores as spaces,
softmax over all 1000 class names).

Example::

    python generate_cam_fss.py --datapath ../Datasets_HSN --clip-weights ~/.cache/clip/RN50.pt

See ``priors/cam_job.py`` (which pairs, prompts, resume, failures) and ``priors/recipes/clip_gradcam.py`` (the recipe).
"""
import sys

from priors.cam_job import main

if __name__ == "__main__":
    sys.exit(main("fss"))
