"""The run machinery, above ``data/`` and ``model/``: flags, the train/validation/test loops, run checkpoints,
the training steps, the CAM job, the predictor and the demo. The scripts at the repository root call into it."""
