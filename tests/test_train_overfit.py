"""Overfitting check: a handful of synthetic episodes, trained through the real loop pieces, must be learned.

Catches a broken loss, a frozen learner or wrong labels: the loss must fall and the training mIoU over the
episodes' classes must rise substantially. To keep it cheap on a CPU (random backbone, 32 px), the CAM
priors are the (8x downsampled) ground-truth masks, which the network still has to learn to use.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.loops import forward_1shot
from common.evaluation import IoUMeter, classify_prediction
from tests.train_helpers import make_tiny_inputs

pytestmark = pytest.mark.slow
IMG = 32


def test_overfits_a_few_episodes(synthetic_root, tmp_path):
    from data.dataset import build_dataset
    from model import build_model

    tiny = make_tiny_inputs(synthetic_root, tmp_path)
    dataset = build_dataset("pascal", datapath=synthetic_root, fold=0, split="trn", img_size=IMG,
                            cam_train_path=tiny.traincam, cam_val_path=tiny.valcam, splitpath=tiny.splitpath, seed=0)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(4)])
    batch["query_cam"] = F.adaptive_avg_pool2d(batch["query_mask"][:, None], IMG // 8)[:, 0]
    batch["support_cams"] = F.adaptive_avg_pool2d(batch["support_masks"], IMG // 8)
    classes = sorted(set(batch["class_id"].tolist()))

    torch.manual_seed(0)
    model = build_model("vgg16", backbone_weights=None)
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train_mode()

    history = []
    for _ in range(90):
        logit_q, loss = forward_1shot(model, batch, stage=2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        meter = IoUMeter(classes, nclass=20)
        meter.update(*classify_prediction(logit_q.argmax(dim=1), batch), batch["class_id"])
        history.append((float(loss.detach()), meter.compute_iou()[0]))
        if len(history) > 10 and history[-1][0] < 0.3 * history[0][0] and history[-1][1] > history[0][1] + 40:
            break
    (loss0, miou0), (loss1, miou1) = history[0], history[-1]
    assert loss1 < 0.3 * loss0, history
    assert miou1 > miou0 + 40, history
