"""Stage 1 of the method: label text -> a coarse mask (prior) per (image, class).

* :mod:`priors.recipes`: the recipes by name (``gradcam-rn50``, the released CLIP RN50 Grad-CAM; ``clip-es``),
  each a :class:`~priors.recipes.base.PriorRecipe`; a new recipe is one module in that folder and one registry
  line (docs/extending.md);
* :mod:`priors.clip_weights`: what ``--clip-weights`` accepts, for every CLIP the recipes use;
* :mod:`priors.cam_job`: the CAM job behind ``generate_cam_{voc,coco,fss}.py``;
* :mod:`priors.provenance`: train.py / test.py check the CAM folders they read;
* :mod:`priors.quality`, :mod:`priors.report`: how good a folder of priors is (``evaluate_priors.py``).

The on-disk CAM layout the loaders read (file names, manifests) and the import of priors made elsewhere
(``python -m data.priors import``) are in :mod:`data`; stage 2, the few-shot model, is :mod:`model`.
"""
