"""common.evaluation against golden numbers measured by running the released evaluator on random masks.

tests/golden/evaluation_released.pt holds, per benchmark, 4 batches of random (pred, query_mask, ignore map,
class_id) and the released ``Evaluator.classify_prediction`` / ``AverageMeter`` outputs (run in /tmp with the
shims of the spec: ``.cuda()`` no-op, ``histc`` on float input).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.evaluation import IoUMeter, classify_prediction
from tests.golden_spread import check_deviation

GOLDEN = Path(__file__).parent / "golden" / "evaluation_released.pt"


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, map_location="cpu", weights_only=True)


def _batch(rec: dict) -> tuple[torch.Tensor, dict]:
    batch = {"query_mask": rec["query_mask"].float(), "class_id": rec["class_id"]}
    if "query_ignore_idx" in rec:
        batch["query_ignore_idx"] = rec["query_ignore_idx"].float()
    return rec["pred"].long(), batch


@pytest.mark.golden
@pytest.mark.parametrize("bench", ["pascal", "coco"])
def test_matches_released_evaluator(golden, bench):
    gold = golden[bench]
    meter = IoUMeter(gold["class_ids"], gold["nclass"])
    for rec in gold["batches"]:
        pred, batch = _batch(rec)
        inter, union = classify_prediction(pred, batch)
        assert torch.equal(inter, rec["inter"]) and torch.equal(union, rec["union"])
        meter.update(inter, union, batch["class_id"])
    assert torch.equal(meter.intersection.float(), gold["intersection_buf"])
    assert torch.equal(meter.union.float(), gold["union_buf"])
    miou, fb_iou = meter.compute_iou()
    check_deviation(f"{bench} evaluator mIoU", abs(miou - gold["miou"]), 1e-4)
    check_deviation(f"{bench} evaluator FB-IoU", abs(fb_iou - gold["fb_iou"]), 1e-4)
    assert meter.summary()["episodes"] == sum(len(r["class_id"]) for r in gold["batches"])


def test_inputs_are_not_modified(golden):
    pred, batch = _batch(golden["pascal"]["batches"][0])
    before_pred, before = pred.clone(), {k: v.clone() for k, v in batch.items()}
    classify_prediction(pred, batch)
    assert torch.equal(pred, before_pred)
    for key, value in before.items():
        assert torch.equal(batch[key], value), key


def test_float_vote_prediction_and_overlap_error():
    gt = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    inter, union = classify_prediction(torch.tensor([[[0.0, 1.0], [0.0, 0.0]]]), {"query_mask": gt})
    assert inter[:, 0].tolist() == [2.0, 1.0] and union[:, 0].tolist() == [3.0, 2.0]
    with pytest.raises(ValueError, match="overlaps"):
        classify_prediction(gt.clone(), {"query_mask": gt, "query_ignore_idx": gt})


def test_meter_loss_per_class_and_bad_class_ids():
    meter = IoUMeter([0, 1], nclass=20)
    meter.update(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [4.0]]), torch.tensor([1]), loss=torch.tensor(2.0))
    meter.update(torch.zeros(2, 1), torch.zeros(2, 1), torch.tensor([0]), loss=4.0)
    assert meter.avg_loss == 3.0 and meter.last_loss == 4.0
    assert meter.per_class_iou() == {0: 0.0, 1: 75.0}
    miou, fb = meter.compute_iou()
    assert miou == pytest.approx(37.5) and fb == pytest.approx(100 * (0.5 + 0.75) / 2)
    with pytest.raises(ValueError, match="class_ids"):
        IoUMeter([20], nclass=20)
