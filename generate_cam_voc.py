"""CLIP Grad-CAM priors for every (image, class) pair of PASCAL VOC 2012 (PASCAL-5i).

Example::

    python generate_cam_voc.py --datapath ../Datasets_HSN --clip-weights ~/.cache/clip/RN50.pt

See ``priors/cam_job.py`` (which pairs, resume, failures) and ``priors/recipes/clip_gradcam.py`` (the recipe).
"""
import sys

from priors.cam_job import main

if __name__ == "__main__":
    sys.exit(main("pascal"))
