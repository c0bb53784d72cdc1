"""How good a folder of CAM priors is: IoU with the ground-truth masks, per class and mean, at the best single
threshold (a sweep 0.05..0.95) and at 0.5, as CLIP-ES's eval_cam.py reports CAM quality.

Example::

    python evaluate_priors.py --benchmark pascal --fold 0 --split val --priors ../Datasets_HSN/CAM_Val \\
        --out prior_quality/pascal_val_fold0

See ``priors/quality.py`` (what is measured) and ``priors/report.py`` (the outputs).
"""
import sys

from priors.report import main

if __name__ == "__main__":
    sys.exit(main())
