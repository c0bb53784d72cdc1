"""Mask values outside the class range: read as background as the released loaders read them, one warning per
file (also when DataLoader workers read it), a count at the end; ``strict_masks`` keeps today's error."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from data.dataset import build_dataloader, build_dataset
from data.errors import DataError
from data.mask_values import NOTES_KEY, OutsideValueReport
from tests.data_helpers import write_fake_cams


@pytest.fixture(scope="module")
def coco_root(synthetic_root, module_tmp):
    """The synthetic COCO images (linked) with a copy of their mask PNGs that may be altered, and fake CAMs."""
    root = module_tmp("coco_masks")
    (root / "COCO2014").mkdir()
    for split in ("train2014", "val2014"):
        (root / "COCO2014" / split).symlink_to(synthetic_root / "COCO2014" / split)
    shutil.copytree(synthetic_root / "COCO2014" / "annotations", root / "COCO2014" / "annotations")
    write_fake_cams(synthetic_root / "splits", root, size=2)
    return root


def _test_set(root, splitpath, **kw):
    return build_dataset("coco", datapath=root, fold=0, split="test", img_size=16, nepisodes=12,
                         splitpath=splitpath, cam_train_path=root / "CAM_COCO", cam_val_path=root / "CAM_COCO", **kw)


def _with_value_200(root, synthetic_root):
    """Put value 200 into the query mask of the first test episode (the synthetic one, copied afresh), on its
    upper half; returns its path and the episode."""
    ds = _test_set(root, synthetic_root / "splits")
    path = ds.mask_path(ds.episode(0).query)
    shutil.copyfile(synthetic_root / path.relative_to(root), path)
    mask = np.array(Image.open(path))
    mask[: mask.shape[0] // 2] = 200
    Image.fromarray(mask).save(path)
    return path, ds.episode(0)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "data.mask_values"]


@pytest.mark.parametrize("nworker", [0, 2])
def test_value_200_is_background_with_one_warning_per_file(coco_root, synthetic_root, caplog, nworker):
    path, episode = _with_value_200(coco_root, synthetic_root)
    report = OutsideValueReport()
    ds = _test_set(coco_root, synthetic_root / "splits", mask_report=report)
    caplog.set_level(logging.WARNING)
    for _ in range(2):  # two passes (epochs), with workers two sets of worker processes: still one warning
        batches = list(build_dataloader(ds, bsz=4, nworker=nworker, shuffle=False))
    assert all(NOTES_KEY not in batch for batch in batches)
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and str(path) in warnings[0] and "[200]" in warnings[0], warnings
    assert report.files == {str(path): [200]} and len(report) == 1
    summary = report.summary()
    assert summary.startswith("1 mask file(s) held values outside the class range") and str(path) in summary
    # read as the released loader reads it: 200 is background, the class's own pixels below it are kept
    label = torch.from_numpy(np.array(Image.open(path)))
    query = ds[0]["query_mask"]
    assert query[:8].max() == 0 and query[8:].max() == 1
    assert torch.equal(query, (ds._resize_label(label) == episode.class_id + 1).float())


def test_strict_masks_keeps_the_error(coco_root, synthetic_root):
    path, _ = _with_value_200(coco_root, synthetic_root)
    ds = _test_set(coco_root, synthetic_root / "splits", strict_masks=True)
    with pytest.raises(DataError, match=rf"^mask {path} holds class index\(es\) \[200\] outside 0..80$"):
        ds[0]


def test_an_undecodable_mask_stays_an_error(coco_root, synthetic_root):
    path, _ = _with_value_200(coco_root, synthetic_root)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=f"cannot read mask {path}"):
        _test_set(coco_root, synthetic_root / "splits")[0]


def test_report_merges_notes_and_counts_files_once():
    report = OutsideValueReport()
    report.add_encoded(["", '[["a.png", [200, 81]]]', '[["a.png", [200]], ["b.png", [90]]]'])
    assert report.files == {"a.png": [81, 200], "b.png": [90]} and report.summary().startswith("2 mask file(s)")
    assert OutsideValueReport().summary() is None
