"""Datasets on the synthetic benchmark: batch contents and shapes, fold classes, CAM check, bad inputs."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from data.dataset import build_dataloader, build_dataset
from priors.provenance import check_cams_exist
from data.errors import DataError, MissingCAMError, SplitError
from common.constants import IMAGENET_MEAN, IMAGENET_STD
from data.readers import ImageTransform, read_cam
from tests.data_helpers import write_fake_cams

IMG = 64  # small images keep the tests fast; CAMs are stored 50x50 and resized to IMG // 8


@pytest.fixture(scope="module")
def cams(synthetic_root, module_tmp) -> dict[str, Path]:
    return write_fake_cams(synthetic_root / "splits", module_tmp("cams"))


def _build(synthetic_root, cams, benchmark, split, **kw):
    cam_kw = (dict(cam_train_path=cams["pascal_trn"], cam_val_path=cams["pascal_val"]) if benchmark == "pascal"
              else dict(cam_train_path=cams["coco"], cam_val_path=cams["coco"]))
    kw.setdefault("fold", 0)
    kw.setdefault("img_size", IMG)
    return build_dataset(benchmark, datapath=synthetic_root, split=split, splitpath=synthetic_root / "splits",
                         **cam_kw, **kw)


@pytest.mark.parametrize("benchmark", ["pascal", "coco"])
@pytest.mark.parametrize("split", ["trn", "test"])
def test_batch_contents_and_shapes(synthetic_root, cams, benchmark, split):
    shot, bsz = 2, 3
    ds = _build(synthetic_root, cams, benchmark, split, shot=shot, nepisodes=6)
    batch = next(iter(build_dataloader(ds, bsz=bsz, nworker=0, shuffle=False)))
    h = IMG // 8
    assert batch["query_img"].shape == (bsz, 3, IMG, IMG)
    assert batch["query_mask"].shape == (bsz, IMG, IMG)
    assert batch["support_imgs"].shape == (bsz, shot, 3, IMG, IMG)
    assert batch["support_masks"].shape == (bsz, shot, IMG, IMG)
    assert batch["query_cam"].shape == (bsz, h, h) and batch["query_cam"].dtype == torch.float32
    assert batch["support_cams"].shape == (bsz, shot, h, h)
    assert batch["class_id"].dtype == torch.int64 and batch["class_id"].shape == (bsz,)
    assert len(batch["query_name"]) == bsz and len(batch["support_names"]) == shot
    assert len(batch["org_query_imsize"]) == 2  # (W, H), collated per coordinate as released
    for key in ("query_mask", "support_masks"):
        assert set(batch[key].unique().tolist()) <= {0.0, 1.0}
    assert (batch["query_mask"].flatten(1).sum(1) > 0).all()  # every query shows its class
    assert ("query_ignore_idx" in batch) == (benchmark == "pascal")
    if benchmark == "pascal":
        assert batch["query_ignore_idx"].shape == (bsz, IMG, IMG)
        assert batch["support_ignore_idxs"].shape == (bsz, shot, IMG, IMG)
        assert batch["query_ignore_idx"].sum() > 0  # the synthetic masks have 255 boundary rings
        assert not (batch["query_ignore_idx"].bool() & batch["query_mask"].bool()).any()
    for i in range(bsz):
        ep = ds.episode(i)
        assert batch["query_name"][i] == ep.query and int(batch["class_id"][i]) == ep.class_id
        assert ep.query not in ep.supports and ep.class_id in ds.class_ids
        assert [batch["support_names"][k][i] for k in range(shot)] == list(ep.supports)


def test_batch_values_follow_the_released_recipe(synthetic_root, cams):
    ds = _build(synthetic_root, cams, "pascal", "test", nepisodes=1)
    item = ds[0]
    ep = ds.episode(0)
    img = Image.open(synthetic_root / "VOC2012" / "JPEGImages" / f"{ep.query}.jpg")
    released_tf = transforms.Compose([transforms.Resize(size=(IMG, IMG)), transforms.ToTensor(),
                                      transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.equal(item["query_img"], released_tf(img))
    label = torch.tensor(np.array(Image.open(synthetic_root / "VOC2012" / "SegmentationClassAug" / f"{ep.query}.png")))
    near = torch.nn.functional.interpolate(label[None, None].float(), (IMG, IMG), mode="nearest")[0, 0]
    assert torch.equal(item["query_mask"], (near == ep.class_id + 1).float())
    assert torch.equal(item["query_ignore_idx"], (near / 255).floor())
    assert item["org_query_imsize"] == img.size
    cam = torch.load(ds.cam_root / f"{ep.query}--{ep.class_id}.pt")
    expected = torch.nn.functional.interpolate(cam[None, None], (IMG // 8,) * 2, mode="bilinear",
                                               align_corners=True)[0, 0]
    assert torch.allclose(item["query_cam"], expected)


def test_cams_of_the_right_size_are_not_resampled(tmp_path):
    cam = torch.rand(50, 50)
    torch.save(cam, tmp_path / "a--0.pt")
    assert torch.equal(read_cam(tmp_path / "a--0.pt", 50), cam)
    assert read_cam(tmp_path / "a--0.pt", 40).shape == (40, 40)


def test_use_original_imgsize_keeps_the_query_mask_size(synthetic_root, cams):
    ds = _build(synthetic_root, cams, "coco", "test", nepisodes=1, use_original_imgsize=True)
    item = ds[0]
    w, h = item["org_query_imsize"]
    assert item["query_mask"].shape == (h, w) and item["query_img"].shape == (3, IMG, IMG)
    assert item["support_masks"].shape[-2:] == (IMG, IMG)


def test_fold_class_sets(synthetic_root, cams):
    for fold in range(4):
        pascal_val = _build(synthetic_root, cams, "pascal", "val", fold=fold, nepisodes=1).class_ids
        pascal_trn = _build(synthetic_root, cams, "pascal", "trn", fold=fold).class_ids
        assert pascal_val == list(range(5 * fold, 5 * fold + 5))
        assert sorted(pascal_trn + pascal_val) == list(range(20))
        coco_val = _build(synthetic_root, cams, "coco", "val", fold=fold, nepisodes=1).class_ids
        coco_trn = _build(synthetic_root, cams, "coco", "trn", fold=fold).class_ids
        assert coco_val == list(range(fold, 80, 4))
        assert sorted(coco_trn + coco_val) == list(range(80))
    # training on fold f reads the other folds' lists, with one episode per listed pair
    trn = _build(synthetic_root, cams, "pascal", "trn", fold=1)
    assert {c for _, c in trn.img_metadata} == set(range(20)) - set(range(5, 10))


@pytest.mark.parametrize("benchmark", ["pascal", "coco"])
def test_training_episodes_vary_per_epoch_and_reproduce(synthetic_root, cams, benchmark):
    ds = _build(synthetic_root, cams, benchmark, "trn", shot=3, seed=7)
    first = [ds.episode(i) for i in range(len(ds))]
    again = _build(synthetic_root, cams, benchmark, "trn", shot=3, seed=7)
    assert [again.episode(i) for i in range(len(ds))] == first
    ds.set_epoch(1)
    second = [ds.episode(i) for i in range(len(ds))]
    assert second != first
    for ep in second:
        assert ep.query not in ep.supports and ep.class_id in ds.class_ids
        assert all(s in ds.img_metadata_classwise[ep.class_id] for s in ep.supports)


@pytest.mark.slow
def test_training_episodes_do_not_depend_on_workers(synthetic_root, cams):
    ds = _build(synthetic_root, cams, "coco", "trn", img_size=16, seed=3)
    ds.set_epoch(2)
    expected = [ds.episode(i).query for i in range(len(ds))]
    names = []
    for batch in build_dataloader(ds, bsz=16, nworker=2, shuffle=False):
        names += batch["query_name"]
    assert names == expected


def test_missing_cams_are_reported_with_the_command(synthetic_root, cams, tmp_path):
    ds = _build(synthetic_root, cams, "pascal", "test", nepisodes=50)
    check_cams_exist(ds)
    _build(synthetic_root, cams, "coco", "trn")  # builds fine
    check_cams_exist(_build(synthetic_root, cams, "coco", "trn"))
    partial = tmp_path / "cams"
    shutil.copytree(cams["pascal_val"], partial)
    ds = build_dataset("pascal", datapath=synthetic_root, fold=0, split="test", img_size=IMG, nepisodes=50,
                       splitpath=synthetic_root / "splits", cam_train_path=cams["pascal_trn"], cam_val_path=partial)
    needed = sorted(ds.cam_root / f"{n}--{c}.pt" for n, c in ds.needed_cam_pairs())
    gone = needed[1:4]
    for path in gone:
        path.unlink()
    with pytest.raises(MissingCAMError) as err:
        check_cams_exist(ds)
    msg = str(err.value)
    assert msg.startswith(f"{len(gone)} of {len(needed)} CAM priors")
    assert str(gone[0]) in msg and "python generate_cam_voc.py --datapath" in msg
    coco = build_dataset("coco", datapath=synthetic_root, fold=0, split="trn", img_size=IMG,
                         splitpath=synthetic_root / "splits", cam_train_path=tmp_path / "none",
                         cam_val_path=tmp_path / "none")
    with pytest.raises(MissingCAMError, match="python generate_cam_coco.py --datapath .* --campath"):
        check_cams_exist(coco)


# ---------------------------------------------------------------------------------------------------------
# Bad input: a tiny PASCAL tree we can break
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def mini(tmp_path) -> Path:
    """Three 40x30 images of class 0 (val fold 0), 8x8 CAMs."""
    root = tmp_path / "mini"
    (root / "VOC2012" / "JPEGImages").mkdir(parents=True)
    (root / "VOC2012" / "SegmentationClassAug").mkdir(parents=True)
    (root / "CAM_Val").mkdir()
    rng = np.random.default_rng(0)
    names = [f"2007_00000{i}" for i in range(3)]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(
            root / "VOC2012" / "JPEGImages" / f"{name}.jpg")
        mask = np.zeros((30, 40), np.uint8)
        mask[5:20, 5:25] = 1
        mask[4, 4:26] = 255
        Image.fromarray(mask).save(root / "VOC2012" / "SegmentationClassAug" / f"{name}.png")
        torch.save(torch.rand(8, 8), root / "CAM_Val" / f"{name}--0.pt")
    split = root / "splits" / "pascal" / "val"
    split.mkdir(parents=True)
    (split / "fold0.txt").write_text("".join(f"{n}__01\n" for n in names))
    return root


def _mini_item(root: Path, index: int = 0, **kw):
    ds = build_dataset("pascal", datapath=root, fold=0, split="test", img_size=32, nepisodes=3,
                       splitpath=root / "splits", **kw)
    return ds, ds[index]


def test_mini_tree_loads(mini):
    ds, item = _mini_item(mini)
    assert item["query_mask"].sum() > 0 and item["query_ignore_idx"].sum() > 0


def test_corrupt_image_names_the_file(mini):
    ds, _ = _mini_item(mini)
    path = mini / "VOC2012" / "JPEGImages" / f"{ds.episode(0).query}.jpg"
    path.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=str(path)):
        ds[0]
    path.write_bytes(b"")
    with pytest.raises(DataError, match=str(path)):
        ds[0]


def test_truncated_image_names_the_file(mini):
    ds, _ = _mini_item(mini)
    path = mini / "VOC2012" / "JPEGImages" / f"{ds.episode(0).query}.jpg"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=str(path)):
        ds[0]


def test_missing_image_names_the_file(mini):
    ds, _ = _mini_item(mini)
    path = mini / "VOC2012" / "JPEGImages" / f"{ds.episode(0).query}.jpg"
    path.unlink()
    with pytest.raises(DataError, match=f"{path} not found"):
        ds[0]


def test_mask_of_another_size_names_both_files(mini):
    ds, _ = _mini_item(mini)
    name = ds.episode(0).query
    path = mini / "VOC2012" / "SegmentationClassAug" / f"{name}.png"
    Image.fromarray(np.zeros((31, 40), np.uint8)).save(path)
    with pytest.raises(DataError, match=f"mask {path} is 40x31.*{name}.jpg is 40x30"):
        ds[0]


def test_class_index_out_of_range_in_mask(mini):
    ds, _ = _mini_item(mini)
    path = mini / "VOC2012" / "SegmentationClassAug" / f"{ds.episode(0).query}.png"
    mask = np.zeros((30, 40), np.uint8)
    mask[0, 0] = 33
    Image.fromarray(mask).save(path)
    with pytest.raises(DataError, match=rf"mask {path} holds class index\(es\) \[33\]"):
        _mini_item(mini, strict_masks=True)
    ds, item = _mini_item(mini)  # by default: background, as released (tests/test_mask_values.py)
    assert item["query_mask"][0, 0] == 0 and item["query_ignore_idx"][0, 0] == 0
    assert ds.mask_report.files == {str(path): [33]}


def test_class_index_out_of_range_in_split_list(mini):
    split = mini / "splits" / "pascal" / "val" / "fold0.txt"
    split.write_text(split.read_text() + "2007_000000__21\n")
    with pytest.raises(SplitError, match=rf"{split}:4: class 21 outside 1..20"):
        _mini_item(mini)


def test_empty_split_list_names_the_file(mini):
    split = mini / "splits" / "pascal" / "val" / "fold0.txt"
    split.write_text("")
    with pytest.raises(SplitError, match=f"split list {split} is empty"):
        _mini_item(mini)


def test_class_with_a_single_image_cannot_make_episodes(mini):
    split = mini / "splits" / "pascal" / "val" / "fold0.txt"
    split.write_text("2007_000000__01\n")
    with pytest.raises(DataError, match="class 0 has 1 image"):
        _mini_item(mini)


def test_corrupt_and_missing_cam(mini):
    ds, _ = _mini_item(mini)
    path = mini / "CAM_Val" / f"{ds.episode(0).query}--0.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"cannot read CAM {path}"):
        ds[0]
    path.unlink()
    with pytest.raises(MissingCAMError, match=str(path)):
        ds[0]
    torch.save(torch.rand(2, 8, 8), path)
    with pytest.raises(DataError, match="must hold a 2-D tensor"):
        ds[0]


def test_empty_coco_split_names_the_file(tmp_path):
    folder = tmp_path / "splits" / "coco" / "val"
    folder.mkdir(parents=True)
    with open(folder / "fold0.pkl", "wb") as f:
        pickle.dump({c: [] for c in range(80)}, f)
    with pytest.raises(SplitError, match=f"split list {folder / 'fold0.pkl'} is empty"):
        build_dataset("coco", datapath=tmp_path, fold=0, split="test", splitpath=tmp_path / "splits")


def test_image_transform_matches_torchvision_compose():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (37, 53, 3), dtype=np.uint8))
    released = transforms.Compose([transforms.Resize(size=(24, 24)), transforms.ToTensor(),
                                   transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.equal(ImageTransform(24)(img), released(img))
