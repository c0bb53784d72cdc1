"""Tests of data/synthetic.py: layouts, counts, mask values, split formats, COCO JSON, determinism."""
from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from data import synthetic
from data.benchmarks import COCO_CATEGORIES
from data.coco_masks import COCO_PAINT_ORDER, paint_coco_mask
from data.synthetic import make_benchmark

pytestmark = pytest.mark.filterwarnings(
    f"ignore:{synthetic.PYCOCOTOOLS_NUMPY2_WARNING}:DeprecationWarning")

IPC = 6  # make_benchmark's default images_per_class, used by the session fixture
MIN_SIZE, MAX_SIZE = 64, 112


def _tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _read_pascal_split(root: Path, split: str, fold: int) -> list[tuple[str, int]]:
    """Parse a PASCAL split file the way HSNet's DatasetPASCAL does (0-based class)."""
    text = (root / "splits" / "pascal" / split / f"fold{fold}.txt").read_text()
    lines = text.split("\n")[:-1]
    return [(line.split("__")[0], int(line.split("__")[1]) - 1) for line in lines]


def _read_pkl(root: Path, split: str, fold: int) -> dict:
    with open(root / "splits" / "coco" / split / f"fold{fold}.pkl", "rb") as f:
        return pickle.load(f)


def _mask(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


@pytest.fixture(scope="module")
def coco_trn(synthetic_root: Path) -> COCO:
    return COCO(str(synthetic_root / "COCO2014" / "annotations" / "instances_train2014.json"))


# ------------------------------------------------------------------------------------------------ layout
def test_marker_and_counts(synthetic_root: Path):
    summary = json.loads((synthetic_root / "synthetic.json").read_text())
    assert summary["seed"] == 0 and summary["images_per_class"] == IPC
    assert not (synthetic_root / synthetic.INCOMPLETE_MARKER).exists()
    assert summary["counts"]["pascal"]["trn"]["images"] == 20 * IPC
    assert summary["counts"]["coco"]["val"]["images"] == 80 * IPC
    assert summary["coco_paint_order"] == COCO_PAINT_ORDER


def test_pascal_layout(synthetic_root: Path):
    voc = synthetic_root / "VOC2012"
    jpgs = sorted(p.stem for p in (voc / "JPEGImages").glob("*.jpg"))
    pngs = sorted(p.stem for p in (voc / "SegmentationClassAug").glob("*.png"))
    assert jpgs == pngs and len(jpgs) == 2 * 20 * IPC
    assert all(len(n) == 11 and n[4] == "_" and n[:4].isdigit() and n[5:].isdigit() for n in jpgs)
    for fold in range(4):
        for split in ("trn", "val"):
            assert (synthetic_root / "splits" / "pascal" / split / f"fold{fold}.txt").is_file()
    sizes = set()
    for name in jpgs:
        img = Image.open(voc / "JPEGImages" / f"{name}.jpg")
        mask = Image.open(voc / "SegmentationClassAug" / f"{name}.png")
        assert img.format == "JPEG" and img.mode == "RGB"
        assert mask.mode == "L" and mask.size == img.size
        w, h = img.size
        assert MIN_SIZE <= w <= MAX_SIZE and MIN_SIZE <= h <= MAX_SIZE and w != h
        sizes.add(img.size)
    assert len(sizes) > len(jpgs) // 2  # varied sizes


def test_coco_layout(synthetic_root: Path):
    base = synthetic_root / "COCO2014"
    for sdir in ("train2014", "val2014"):
        jpgs = sorted(p.name for p in (base / sdir).glob("*.jpg"))
        pngs = sorted(p.name for p in (base / "annotations" / sdir).glob("*.png"))
        assert len(jpgs) == 80 * IPC
        assert pngs == [n.replace(".jpg", ".png") for n in jpgs]
        assert all(n.startswith(f"COCO_{sdir}_") and len(n) == len(f"COCO_{sdir}_") + 12 + 4 for n in jpgs)
        assert (base / "annotations" / f"instances_{sdir}.json").is_file()
    train = {p.name[-16:] for p in (base / "train2014").glob("*.jpg")}
    val = {p.name[-16:] for p in (base / "val2014").glob("*.jpg")}
    assert not train & val  # image ids are unique across splits, like COCO's


# ------------------------------------------------------------------------------------------------ masks
def test_pascal_mask_values_and_boundary(synthetic_root: Path):
    seen = set()
    for path in (synthetic_root / "VOC2012" / "SegmentationClassAug").glob("*.png"):
        m = _mask(path)
        values = set(np.unique(m).tolist())
        assert values <= set(range(21)) | {255}
        assert 255 in values and 0 in values
        # 255 only forms a thin ring: (nearly) every 255 pixel has a non-255 pixel next to it; only
        # one-pixel slivers (a shape's tip, a narrow gap between objects) turn into 255 blocks
        ring = m == 255
        pad = np.pad(~ring, 1, constant_values=False)
        near = np.zeros_like(ring)
        for dy in range(3):
            for dx in range(3):
                near |= pad[dy:dy + m.shape[0], dx:dx + m.shape[1]]
        assert near[ring].mean() > 0.97
        assert ring.sum() < 0.4 * (m > 0).sum()
        seen |= values
    assert seen == set(range(21)) | {255}


def test_coco_mask_values(synthetic_root: Path):
    seen = set()
    for sdir in ("train2014", "val2014"):
        for path in (synthetic_root / "COCO2014" / "annotations" / sdir).glob("*.png"):
            m = _mask(path)
            assert m.dtype == np.uint8 and m.ndim == 2
            seen |= set(np.unique(m).tolist())
    assert seen == set(range(81))


# ------------------------------------------------------------------------------------------------ splits
def test_pascal_splits_parse_like_hsnet_and_cover_classes(synthetic_root: Path):
    voc = synthetic_root / "VOC2012"
    images = {"trn": set(), "val": set()}
    for split in ("trn", "val"):
        for fold in range(4):
            pairs = _read_pascal_split(synthetic_root, split, fold)
            fold_classes = set(range(5 * fold, 5 * fold + 5))
            assert pairs and {c for _, c in pairs} == fold_classes
            assert len(set(pairs)) == len(pairs)
            for c in fold_classes:
                assert len({n for n, k in pairs if k == c}) >= IPC
            for name, c in pairs:
                m = _mask(voc / "SegmentationClassAug" / f"{name}.png")
                assert (m == c + 1).sum() > 0.02 * m.size
                images[split].add(name)
    assert not images["trn"] & images["val"]


def test_coco_split_pkls(synthetic_root: Path):
    base = synthetic_root / "COCO2014"
    for split, sdir in (("trn", "train2014"), ("val", "val2014")):
        for fold in range(4):
            d = _read_pkl(synthetic_root, split, fold)
            assert isinstance(d, dict) and sorted(d) == list(range(80))
            assert all(type(k) is int and isinstance(v, list) for k, v in d.items())
            val_classes = {fold + 4 * v for v in range(20)}
            fold_classes = val_classes if split == "val" else set(range(80)) - val_classes
            for c, names in d.items():
                if c not in fold_classes:
                    assert names == []
                    continue
                assert len(set(names)) == len(names) >= IPC
                for name in names:
                    assert name.startswith(f"{sdir}/COCO_{sdir}_") and name.endswith(".jpg")
                    assert (base / name).is_file()
                    m = _mask(base / "annotations" / name.replace(".jpg", ".png"))
                    assert (m == c + 1).sum() > 0.02 * m.size


# ------------------------------------------------------------------------------------------------ COCO JSON
def test_coco_json_is_official_format(coco_trn: COCO):
    cats = coco_trn.loadCats(coco_trn.getCatIds())
    assert [(c["id"], c["name"], c["supercategory"]) for c in cats] == list(COCO_CATEGORIES)
    ids = [c["id"] for c in cats]
    assert ids[0] == 1 and ids[-1] == 90 and len(ids) == 80 and ids != list(range(1, 81))
    assert {c["name"] for c in cats} >= {"person", "toothbrush", "dining table", "tv", "hair drier"}
    anns = coco_trn.loadAnns(coco_trn.getAnnIds())
    crowd = [a for a in anns if a["iscrowd"]]
    polys = [a for a in anns if not a["iscrowd"]]
    assert crowd and polys
    assert all(isinstance(a["segmentation"], dict) and isinstance(a["segmentation"]["counts"], list)
               for a in crowd)
    assert all(isinstance(a["segmentation"], list) and len(a["segmentation"][0]) >= 6 for a in polys)
    for a in anns[:200]:
        assert a["area"] == coco_trn.annToMask(a).sum()
        assert len(a["bbox"]) == 4
    img = coco_trn.loadImgs(coco_trn.getImgIds()[0])[0]
    assert {"id", "file_name", "height", "width"} <= set(img)


@pytest.mark.parametrize("sdir", ["train2014", "val2014"])
def test_coco_pngs_match_pycocotools(synthetic_root: Path, sdir: str):
    """Painting annToMask by the documented COCO_PAINT_ORDER reproduces every PNG exactly."""
    coco = COCO(str(synthetic_root / "COCO2014" / "annotations" / f"instances_{sdir}.json"))
    label = {cid: i + 1 for i, cid in enumerate(sorted(coco.getCatIds()))}
    for img in coco.loadImgs(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"], iscrowd=None))
        assert 1 <= len(anns) <= 3
        # independent re-implementation of the rule in the module docstring
        want = np.zeros((img["height"], img["width"]), np.uint8)
        for ann in sorted(anns, key=lambda a: (-a["area"], a["id"])):
            want[coco.annToMask(ann) == 1] = label[ann["category_id"]]
        png = _mask(synthetic_root / "COCO2014" / "annotations" / sdir / img["file_name"].replace(".jpg", ".png"))
        np.testing.assert_array_equal(png, want)
        np.testing.assert_array_equal(
            png, paint_coco_mask(anns, img["height"], img["width"], coco.annToMask, label))


# ------------------------------------------------------------------------------------------------ learnable
def test_classes_have_distinct_appearance(synthetic_root: Path):
    """Nearest-centroid on the mean colour of object pixels already tells most PASCAL classes apart."""
    voc = synthetic_root / "VOC2012"
    feats, labels = [], []
    for split in ("trn", "val"):
        for fold in range(4):
            for name, c in _read_pascal_split(synthetic_root, split, fold):
                img = np.asarray(Image.open(voc / "JPEGImages" / f"{name}.jpg"), np.float32)
                m = _mask(voc / "SegmentationClassAug" / f"{name}.png") == c + 1
                feats.append(np.concatenate([img[m].mean(0), img[m].std(0)]))
                labels.append(c)
    feats, labels = np.stack(feats), np.array(labels)
    correct = 0
    for i in range(len(feats)):
        keep = np.arange(len(feats)) != i
        cents = np.stack([feats[keep & (labels == c)].mean(0) for c in range(20)])
        correct += int(np.argmin(((cents - feats[i]) ** 2).sum(1)) == labels[i])
    assert correct / len(feats) > 0.8


def test_class_styles_are_unique():
    styles = [synthetic.class_style(c) for c in range(80)]
    assert len({(s.color, s.shape, s.texture) for s in styles}) == 80
    assert len({s.shape for s in styles}) == 8 and len({s.texture for s in styles}) == 5


# ------------------------------------------------------------------------------------------------ determinism
@pytest.mark.slow
def test_deterministic_for_a_seed(tmp_path: Path):
    kw = dict(images_per_class=2, min_size=48, max_size=72)
    a = _tree_digest(make_benchmark(tmp_path / "a", seed=3, **kw))
    b = _tree_digest(make_benchmark(tmp_path / "b", seed=3, **kw))
    c = _tree_digest(make_benchmark(tmp_path / "c", seed=4, **kw))
    assert a == b
    assert a.keys() == c.keys()
    images = [k for k in a if k.endswith((".jpg", ".png"))]
    assert sum(a[k] != c[k] for k in images) > 0.9 * len(images)


# ------------------------------------------------------------------------------------------------ CLI, guards
def test_cli_single_benchmark_and_regenerate(tmp_path: Path, repo_root: Path):
    root = tmp_path / "syn"
    cmd = [sys.executable, "-m", "data.synthetic", str(root), "--seed", "1", "--images-per-class", "2",
           "--min-size", "40", "--max-size", "56", "--benchmark", "pascal"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(repo_root), "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert not (root / "COCO2014").exists() and (root / "VOC2012" / "JPEGImages").is_dir()
    summary = json.loads((root / "synthetic.json").read_text())
    assert summary["benchmarks"] == ["pascal"] and summary["seed"] == 1
    assert len(list((root / "VOC2012" / "JPEGImages").glob("*.jpg"))) == 2 * 20 * 2
    # regenerating over its own tree replaces it (no stale files)
    make_benchmark(root, seed=1, images_per_class=3, min_size=40, max_size=56, benchmarks=["pascal"])
    assert len(list((root / "VOC2012" / "JPEGImages").glob("*.jpg"))) == 2 * 20 * 3


def test_refuses_foreign_data_and_bad_args(tmp_path: Path):
    (tmp_path / "VOC2012").mkdir()
    with pytest.raises(FileExistsError):
        make_benchmark(tmp_path, images_per_class=2)
    assert (tmp_path / "VOC2012").is_dir()
    with pytest.raises(ValueError):
        make_benchmark(tmp_path / "x", benchmarks=["lvis"])
    with pytest.raises(ValueError):
        make_benchmark(tmp_path / "x", images_per_class=1)
    with pytest.raises(ValueError):
        make_benchmark(tmp_path / "x", min_size=80, max_size=60)
    with pytest.raises(ValueError, match="max_distractors"):
        make_benchmark(tmp_path / "x", max_distractors=3)


def test_max_distractors_zero_gives_one_object_per_image(tmp_path: Path):
    kw = dict(seed=2, images_per_class=3, min_size=48, max_size=72)
    capped = make_benchmark(tmp_path / "capped", max_distractors=0, **kw)
    for split in ("trn", "val"):
        pairs = [pair for fold in range(4) for pair in _read_pascal_split(capped, split, fold)]
        assert len(pairs) == 20 * 3  # each image listed under its primary class only
        for name, cls in pairs:
            labels = set(np.unique(_mask(capped / "VOC2012" / "SegmentationClassAug" / f"{name}.png")))
            assert labels <= {0, cls + 1, 255} and cls + 1 in labels
    coco = COCO(str(capped / "COCO2014" / "annotations" / "instances_val2014.json"))
    assert all(len(coco.getAnnIds(imgIds=[image_id])) == 1 for image_id in coco.getImgIds())
    assert json.loads((capped / "synthetic.json").read_text())["max_distractors"] == 0
    # the default draws distractors (and the cap does not change the default's images)
    default = make_benchmark(tmp_path / "default", **kw)
    default_digest = _tree_digest(default / "VOC2012")
    assert default_digest == _tree_digest(make_benchmark(tmp_path / "two", max_distractors=2, **kw) / "VOC2012")
    assert any(len(set(np.unique(_mask(p))) - {0, 255}) > 1
               for p in (default / "VOC2012" / "SegmentationClassAug").glob("*.png"))


def test_cli_fss_layout(tmp_path: Path, repo_root: Path):
    root = tmp_path / "fss"
    cmd = [sys.executable, "-m", "data.synthetic", str(root), "--benchmark", "fss", "--fss-classes", "3", "2", "2",
           "--min-size", "40", "--max-size", "48"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(repo_root), "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in root.iterdir()) == ["FSS-1000", "splits", "synthetic.json"]
    assert sorted(p.name for p in (root / "splits").iterdir()) == ["fss"]
    lists = {split: (root / "splits" / "fss" / f"{split}.txt").read_bytes() for split in ("trn", "val", "test")}
    assert lists["test"].count(b"\r\n") == 2 and b"\r" not in lists["trn"] + lists["val"]
    names = [n for text in lists.values() for n in text.decode().split()]
    assert len(names) == 7 and sorted(p.name for p in (root / "FSS-1000").iterdir()) == sorted(names)
    for name in names:
        assert name.startswith("toy_") and name.count("_") == 2
        for k in range(1, 11):
            img = Image.open(root / "FSS-1000" / name / f"{k}.jpg")
            mask = Image.open(root / "FSS-1000" / name / f"{k}.png")
            assert img.size == mask.size == (48, 48) and mask.mode == "L"
    summary = json.loads((root / "synthetic.json").read_text())
    assert summary["fss_classes"] == [3, 2, 2] and summary["counts"]["fss"]["trn"] == {"classes": 3, "images": 30}
    for bad in ((0, 1, 1), (521, 1, 1), (2, 2)):
        with pytest.raises(ValueError, match="fss_classes"):
            make_benchmark(tmp_path / "bad", benchmarks=["fss"], fss_classes=bad)
