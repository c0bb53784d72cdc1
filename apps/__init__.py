"""Applications built on the run machinery (:mod:`engine`): the predictor (``predict.py``), the demo
(``demo.py``), backbone pretraining (``python -m apps.pretrain``) and the support swap."""
