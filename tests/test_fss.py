"""FSS-1000 (HSNet's protocol): the seed-0 val/test episodes equal HSNet's sampler's (golden values measured by
running HSNet's code on its real class lists), class ids, the dataset on the synthetic FSS-1000 layout."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.benchmarks import NCLASS
from data.dataset import build_dataloader, build_dataset
from priors.provenance import check_cams_exist
from data.errors import DataError, MissingCAMError, SplitError
from data.fss import fss_image_names, fss_vocabulary, prompt_name
from data.synthetic import make_benchmark

GOLDEN = json.loads((Path(__file__).parent / "golden" / "episodes_fss.json").read_text())
IMG = 64


@pytest.fixture(scope="module")
def hsnet_sized_root(module_tmp) -> Path:
    """An FSS-1000 tree shaped like HSNet's val and test splits: 240 classes each, {1..10}.jpg/.png (empty files:
    only names matter to the sampler). Class names c000.. sort like their index, as any names do once sorted."""
    root = module_tmp("fss_golden")
    lists = root / "splits" / "fss"
    lists.mkdir(parents=True)
    for split, count in (("val", 240), ("test", 240)):
        names = [f"{split}_{i:03d}" for i in range(count)]
        newline = "\r\n" if split == "test" else "\n"  # HSNet's test.txt is CRLF-ended
        (lists / f"{split}.txt").write_bytes("".join(f"{n}{newline}" for n in reversed(names)).encode())
        for name in names:
            folder = root / "FSS-1000" / name
            folder.mkdir(parents=True)
            for k in range(1, 11):
                (folder / f"{k}.jpg").touch()
                (folder / f"{k}.png").touch()
    return root


def _compact(dataset) -> list:
    """Our episodes in the golden form [class index in the sorted list, query id, [support ids], class id]."""
    offset = dataset.class_ids[0]
    return [[ep.class_id - offset, int(ep.query.split("/")[1]), [int(s.split("/")[1]) for s in ep.supports],
             ep.class_id] for ep in dataset.episodes]


@pytest.mark.golden
@pytest.mark.parametrize("key", sorted(GOLDEN["sequences"]))
def test_seed0_episodes_equal_hsnets_sampler(hsnet_sized_root, key):
    golden = GOLDEN["sequences"][key]
    ds = build_dataset("fss", datapath=hsnet_sized_root, fold=0, split=golden["split"], shot=golden["shot"],
                       splitpath=hsnet_sized_root / "splits")
    assert len(ds) == golden["num_episodes"] == 2400  # no --nepisodes: every image once, as HSNet's __len__
    ours = _compact(ds)
    assert ours[:GOLDEN["first_episodes"]] == golden["episodes"]
    assert hashlib.sha256(json.dumps(ours, separators=(",", ":")).encode()).hexdigest() == golden["episodes_sha256"]
    assert ds.class_ids == list(range(520, 760) if golden["split"] == "val" else range(760, 1000))
    # --nepisodes N takes the first N; the global RNG plays no part
    np.random.seed(5)
    prefix = build_dataset("fss", datapath=hsnet_sized_root, fold=0, split=golden["split"], shot=golden["shot"],
                           splitpath=hsnet_sized_root / "splits", nepisodes=30)
    assert _compact(prefix) == ours[:30]


def test_query_order_is_hsnets(hsnet_sized_root):
    names = fss_image_names(hsnet_sized_root / "FSS-1000", "test_000")
    assert [n.split("/")[1] for n in names] == ["1", "10", "2", "3", "4", "5", "6", "7", "8", "9"]


@pytest.fixture(scope="module")
def fss_root(module_tmp) -> Path:
    return make_benchmark(module_tmp("fss_syn"), seed=0, benchmarks=["fss"], max_size=72)


def test_synthetic_layout_and_lists(fss_root):
    assert (fss_root / "splits" / "fss" / "test.txt").read_bytes().count(b"\r\n") == 4  # CRLF, as HSNet's
    vocabulary = fss_vocabulary(fss_root / "splits")
    assert [cls for _, cls in vocabulary] == [0, 1, 2, 3, 4, 5, 6, 7, 520, 521, 522, 523, 760, 761, 762, 763]
    assert all("_" in name and "\r" not in name for name, _ in vocabulary)
    assert prompt_name("abe's_flying_fish") == "abe's flying fish"
    for name, _ in vocabulary:
        files = sorted(p.name for p in (fss_root / "FSS-1000" / name).iterdir())
        assert files == sorted([f"{k}.jpg" for k in range(1, 11)] + [f"{k}.png" for k in range(1, 11)])
    mask = np.array(Image.open(fss_root / "FSS-1000" / vocabulary[0][0] / "1.png"))
    assert set(np.unique(mask).tolist()) == {0, 100, 200, 255}  # a grey edge ring on both sides of 128


def _cams(dataset, root: Path) -> None:
    from data.cam_files import cam_path

    for name, cls in dataset.needed_cam_pairs():
        path = cam_path(root, name, cls)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(torch.rand(50, 50), path)


@pytest.mark.parametrize("split", ["trn", "val", "test"])
def test_batches_binarise_masks_at_128(fss_root, tmp_path, split):
    ds = build_dataset("fss", datapath=fss_root, fold=0, split=split, shot=2, img_size=IMG, nepisodes=6,
                       splitpath=fss_root / "splits", cam_train_path=tmp_path, cam_val_path=tmp_path)
    with pytest.raises(MissingCAMError, match="generate_cam_fss.py .*--campath"):
        check_cams_exist(ds)
    _cams(ds, tmp_path)
    check_cams_exist(ds)
    assert ds.nclass == NCLASS["fss"] and "query_ignore_idx" not in ds[0]
    batch = next(iter(build_dataloader(ds, bsz=3, nworker=0, shuffle=False)))
    assert batch["query_img"].shape == (3, 3, IMG, IMG) and batch["support_masks"].shape == (3, 2, IMG, IMG)
    assert batch["query_cam"].shape == (3, IMG // 8, IMG // 8)
    ep = ds.episode(0)
    assert ep.query not in ep.supports and ep.class_id in ds.class_ids
    grey = torch.from_numpy(np.array(Image.open(fss_root / "FSS-1000" / f"{ep.query}.png")))
    near = torch.nn.functional.interpolate(grey[None, None].float(), (IMG, IMG), mode="nearest")[0, 0]
    assert torch.equal(batch["query_mask"][0], (near >= 128).float())  # HSNet: < 128 -> 0, >= 128 -> 1


def test_training_episodes_query_every_image_and_are_reproducible(fss_root, tmp_path):
    kw = dict(datapath=fss_root, fold=0, split="trn", splitpath=fss_root / "splits", cam_train_path=tmp_path,
              cam_val_path=tmp_path, shot=5)
    ds = build_dataset("fss", seed=7, **kw)
    assert len(ds) == 80 and ds.class_ids == list(range(8))
    episodes = [ds.episode(i) for i in range(len(ds))]
    assert [ep.query for ep in episodes] == [name for name, _ in ds.img_metadata]
    for ep in episodes:
        category = ep.query.split("/")[0]
        assert all(s.split("/")[0] == category and s != ep.query for s in ep.supports)
        assert all(1 <= int(s.split("/")[1]) <= 10 for s in ep.supports)
    assert [build_dataset("fss", seed=7, **kw).episode(i) for i in range(len(ds))] == episodes
    ds.set_epoch(1)
    assert [ds.episode(i) for i in range(len(ds))] != episodes


def test_bad_fss_inputs(fss_root, tmp_path):
    with pytest.raises(ValueError, match="no folds"):
        build_dataset("fss", datapath=fss_root, fold=1, split="test", splitpath=fss_root / "splits")
    with pytest.raises(DataError, match="class folder .*toy_box_01 not found .*data.prepare fss"):
        build_dataset("fss", datapath=tmp_path, fold=0, split="trn", splitpath=fss_root / "splits")
    folder = tmp_path / "FSS-1000" / "x_y"
    folder.mkdir(parents=True)
    for k in (1, 2, 3, 4, 5, 6, 7, 8, 10):
        (folder / f"{k}.jpg").touch()
    with pytest.raises(DataError, match=r"x_y lacks 9.jpg"):
        fss_image_names(tmp_path / "FSS-1000", "x_y")
    lists = tmp_path / "splits" / "fss"
    lists.mkdir(parents=True)
    for split in ("trn", "val", "test"):
        (lists / f"{split}.txt").write_text("x_y\n")
    with pytest.raises(SplitError, match="'x_y' is listed in both trn.txt and val.txt"):
        fss_vocabulary(tmp_path / "splits")
