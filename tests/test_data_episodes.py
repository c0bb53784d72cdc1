"""Validation/test episodes equal the released sampler's (golden lists measured by running it on the
synthetic split lists), whatever the batch size and worker count."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from data.dataset import build_dataloader, build_dataset
from data.episodes import released_choice
from tests.data_helpers import write_fake_cams

GOLDEN = Path(__file__).parent / "golden"


def _golden(benchmark: str) -> dict:
    return json.loads((GOLDEN / f"episodes_{benchmark}.json").read_text())


def _check_same_split_lists(golden: dict, split_root: Path) -> None:
    changed = [rel for rel, sha in golden["split_sha256"].items()
               if hashlib.sha256((split_root / rel).read_bytes()).hexdigest() != sha]
    assert not changed, (f"the synthetic split lists changed ({changed[:3]}...): the golden episodes were "
                         "measured on the old ones and must be measured again with the released sampler")


def _dataset(root: Path, benchmark: str, fold: int, shot: int, n: int, **kw):
    return build_dataset(benchmark, datapath=root, fold=fold, split="test", shot=shot, nepisodes=n,
                         splitpath=root / "splits", **kw)


@pytest.mark.golden
@pytest.mark.parametrize("benchmark", ["pascal", "coco"])
def test_seed0_episodes_equal_the_released_sequence(synthetic_root, benchmark):
    golden = _golden(benchmark)
    _check_same_split_lists(golden, synthetic_root / "splits")
    names = golden["names"]
    assert len(golden["episodes"]) == 8  # folds 0-3, 1 and 5 shots
    for key, episodes in golden["episodes"].items():
        fold, shot = int(key[4]), int(key.split("shot")[1])
        expected = [[names[q], [names[s] for s in sup], c] for q, sup, c in episodes]
        ds = _dataset(synthetic_root, benchmark, fold, shot, len(expected))
        assert [ep.as_json() for ep in ds.episodes] == expected, key
        # --nepisodes takes a prefix of the same sequence
        assert [ep.as_json() for ep in _dataset(synthetic_root, benchmark, fold, shot, 7).episodes] == expected[:7]


def test_val_and_test_are_the_same_episodes(synthetic_root):
    val = build_dataset("coco", datapath=synthetic_root, fold=1, split="val", nepisodes=20,
                        splitpath=synthetic_root / "splits")
    assert val.episodes == _dataset(synthetic_root, "coco", 1, 1, 20).episodes
    other_seed = _dataset(synthetic_root, "coco", 1, 1, 20, seed=1)
    assert other_seed.episodes != val.episodes


def test_global_rng_does_not_matter(synthetic_root):
    np.random.seed(123)
    a = _dataset(synthetic_root, "pascal", 2, 5, 50).episodes
    np.random.seed(7)
    assert _dataset(synthetic_root, "pascal", 2, 5, 50).episodes == a


def test_released_choice_consumes_the_stream_like_np_random_choice():
    items = [f"n{i}" for i in range(37)]
    a, b = np.random.RandomState(5), np.random.RandomState(5)
    for _ in range(20):
        assert released_choice(a, items) == b.choice(items, 1, replace=False)[0]
    assert a.randint(1 << 30) == b.randint(1 << 30)


@pytest.mark.slow
@pytest.mark.parametrize("benchmark", ["pascal", "coco"])
def test_loader_episodes_unchanged_by_batch_size_and_workers(synthetic_root, tmp_path, benchmark):
    cams = write_fake_cams(synthetic_root / "splits", tmp_path, size=4)
    kw = (dict(cam_train_path=cams["pascal_trn"], cam_val_path=cams["pascal_val"]) if benchmark == "pascal"
          else dict(cam_train_path=cams["coco"], cam_val_path=cams["coco"]))
    ds = _dataset(synthetic_root, benchmark, 0, 5, 24, img_size=16, **kw)
    expected = [ep.as_json() for ep in ds.episodes]
    for bsz, nworker in ((1, 0), (5, 2)):
        got = []
        for batch in build_dataloader(ds, bsz=bsz, nworker=nworker, shuffle=False, seed=0):
            for i, query in enumerate(batch["query_name"]):
                got.append([query, [s[i] for s in batch["support_names"]], int(batch["class_id"][i])])
        assert got == expected, (bsz, nworker)
