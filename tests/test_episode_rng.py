"""``--episode-rng released``: training episodes drawn as the released train.py's DataLoader workers drew them
(PyTorch < 1.9 forked every worker with the main process's NumPy state), and the default independent draws
left as they were.

Beside the tests against our own draw function, ``tests/golden/episode_draws_released.json`` holds the draws
of the released ``data/pascal.py`` and ``data/coco.py`` themselves, run on the same synthetic split lists with
3 forked workers sharing one NumPy state and round-robin batches of 4 (its ``about`` says how it was made)."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from common.distributed import DistInfo, EpisodeSampler, seed_for
from data.dataset import build_dataset
from data.episodes import Episode
from engine import run_checkpoint, training
from engine.args import parse_args
from engine.run_folder import RunFolderError
from tests.data_helpers import write_fake_cams

NWORKER, BSZ = 3, 4


@pytest.fixture(scope="module")
def cams(synthetic_root, module_tmp):
    return write_fake_cams(synthetic_root / "splits", module_tmp("cams"), size=2)


def _cam_kw(cams, benchmark: str) -> dict:
    return (dict(cam_train_path=cams["pascal_trn"], cam_val_path=cams["pascal_val"]) if benchmark == "pascal"
            else dict(cam_train_path=cams["coco"], cam_val_path=cams["coco"]))


def _trn(root, cams, benchmark: str, episode_rng: str = "released", seed: int = 5):
    return build_dataset(benchmark, datapath=root, fold=0, split="trn", img_size=16, seed=seed,
                         splitpath=root / "splits", episode_rng=episode_rng, **_cam_kw(cams, benchmark))


def _epoch(ds, epoch: int, *, nworker: int = NWORKER, stream_seed: int = 11) -> tuple[list[int], list[list[Episode]]]:
    """The sampler order of ``epoch`` and its episodes, cut into the loader's batches."""
    sampler = EpisodeSampler(len(ds), shuffle=True, seed=ds.seed)
    sampler.set_epoch(epoch)
    order = sampler.indices()
    ds.set_epoch(epoch, order=order, batch_size=BSZ, nworker=nworker, stream_seed=stream_seed)
    episodes = [ds.episode(i) for i in order]
    return order, [episodes[i:i + BSZ] for i in range(0, len(episodes), BSZ)]


def test_coco_repeats_each_batch_once_per_worker(synthetic_root, cams):
    _, batches = _epoch(_trn(synthetic_root, cams, "coco"), 0)
    groups = [batches[i:i + NWORKER] for i in range(0, len(batches), NWORKER)]
    assert len(groups) > 10 and len(batches[-1]) < BSZ  # the last, shorter batch is checked too
    for group in groups:
        for batch in group[1:]:
            assert batch == group[0][:len(batch)]  # the same episodes: NWORKER Adam steps on one batch
    firsts = [tuple(group[0]) for group in groups]
    assert len(set(firsts)) == len(firsts)  # the groups differ
    _, independent = _epoch(_trn(synthetic_root, cams, "coco", "independent"), 0)
    assert independent[0] != independent[1]


def test_pascal_queries_follow_the_sampler(synthetic_root, cams):
    ds = _trn(synthetic_root, cams, "pascal")
    order, batches = _epoch(ds, 0)
    episodes = [ep for batch in batches for ep in batch]
    assert [(ep.query, ep.class_id) for ep in episodes] == [tuple(ds.img_metadata[i]) for i in order]
    for ep in episodes:
        assert ep.query not in ep.supports and set(ep.supports) <= set(ds.img_metadata_classwise[ep.class_id])
    # the supports come from one NumPy stream per worker, so they depend on the worker count; the queries do not
    _, other = _epoch(_trn(synthetic_root, cams, "pascal"), 0, nworker=1)
    assert [ep.query for b in other for ep in b] == [ep.query for ep in episodes]
    assert [ep.supports for b in other for ep in b] != [ep.supports for ep in episodes]


class _GlobalNumpyDraws(Dataset):
    """What the released loaders did in a worker: every draw from NumPy's global RNG (episodes only, no images)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> list:
        return self.dataset._released_train_episode(np.random, index).as_json()  # the module: the global RNG


def _fork_state(seed: int, worker_id: int) -> None:
    np.random.seed(seed)  # what a worker forked right after the main process's fix_randseed inherited (< 1.9)


@pytest.mark.parametrize("benchmark", ["pascal", "coco"])
@pytest.mark.parametrize("nworker", [0, 2])
def test_equal_to_a_dataloader_whose_workers_share_one_numpy_state(synthetic_root, cams, benchmark, nworker):
    ds = _trn(synthetic_root, cams, benchmark)
    order, batches = _epoch(ds, 1, nworker=nworker, stream_seed=123)
    np.random.seed(123)  # the main process's seed of the epoch (nworker 0: it draws itself)
    loader = DataLoader(_GlobalNumpyDraws(ds), batch_size=BSZ, sampler=order, num_workers=nworker,
                        collate_fn=list, worker_init_fn=functools.partial(_fork_state, 123) if nworker else None)
    assert list(loader) == [[ep.as_json() for ep in batch] for batch in batches]


def _train_args(root, cams, run_dir, *extra: str, benchmark: str = "coco", seed: int = 9):
    cam_kw = _cam_kw(cams, benchmark)
    return parse_args("train", ["--datapath", str(root), "--splitpath", str(root / "splits"),
                                "--traincampath", str(cam_kw["cam_train_path"]),
                                "--valcampath", str(cam_kw["cam_val_path"]),
                                "--benchmark", benchmark, "--img-size", "32", "--bsz", str(BSZ), "--nepisodes", "4",
                                "--seed", str(seed), "--device", "cpu", "--logpath", str(run_dir),
                                "--episode-rng", "released", *extra])


def _names(batch: dict) -> list:
    return [[q, [s[i] for s in batch["support_names"]], int(batch["class_id"][i])]
            for i, q in enumerate(batch["query_name"])]


def _released_golden(split_root: Path) -> dict:
    """tests/golden/episode_draws_released.json: the released data/pascal.py and data/coco.py run on the
    synthetic benchmark with forked workers sharing one NumPy state (how it was made: its "about")."""
    golden = json.loads((Path(__file__).parent / "golden" / "episode_draws_released.json").read_text())
    changed = [rel for rel, sha in golden["split_sha256"].items()
               if hashlib.sha256((split_root / rel).read_bytes()).hexdigest() != sha]
    assert not changed, (f"the synthetic split lists changed ({changed}): the golden draws were measured on the "
                         "old ones and must be measured again with the released dataset code")
    assert (golden["workers"], golden["batch_size"], golden["base_seed"]) == (NWORKER, BSZ, 5)
    return golden


def _golden_batches(golden: dict, benchmark: str, epoch: dict) -> list[list[list]]:
    names = golden["names"][benchmark]
    return [[[names[q], [names[s] for s in sup], c] for q, sup, c in batch] for batch in epoch["batches"]]


@pytest.mark.golden
@pytest.mark.parametrize("benchmark", ["pascal", "coco"])
@pytest.mark.parametrize("shot", [1, 5])
def test_equal_to_the_released_samplers_draws(synthetic_root, cams, benchmark, shot):
    golden = _released_golden(synthetic_root / "splits")
    ds = build_dataset(benchmark, datapath=synthetic_root, fold=0, split="trn", shot=shot, img_size=16, seed=5,
                       splitpath=synthetic_root / "splits", episode_rng="released", **_cam_kw(cams, benchmark))
    epochs = golden["draws"][f"{benchmark}_shot{shot}"]
    assert len(epochs) == 2
    for epoch in epochs:
        order, batches = _epoch(ds, epoch["epoch"], stream_seed=epoch["numpy_seed"])
        assert order == golden["orders"][benchmark][epoch["epoch"]]  # the order the released loader was given
        assert [[ep.as_json() for ep in batch] for batch in batches] == _golden_batches(golden, benchmark, epoch)


@pytest.mark.golden
@pytest.mark.parametrize("benchmark", ["pascal", "coco"])
def test_training_run_draws_equal_the_released_samplers(synthetic_root, cams, tmp_path, benchmark):
    """train.py's path (--seed 5, --nworker 3): the epoch's order and NumPy seed are those the golden was made
    with, so its planned batches are the released loader's."""
    golden = _released_golden(synthetic_root / "splits")
    args = _train_args(synthetic_root, cams, tmp_path / "run", "--nworker", str(NWORKER), benchmark=benchmark, seed=5)
    loaders = training.build_loaders(args, DistInfo(), BSZ)
    for epoch in golden["draws"][f"{benchmark}_shot1"]:
        assert seed_for(args.seed, epoch["epoch"]) == epoch["numpy_seed"]
        training.select_training_episodes(args, loaders, epoch["epoch"], DistInfo(), BSZ)
        order = loaders.trn_sampler.indices()
        planned = [[loaders.trn_set.episode(i).as_json() for i in order[k:k + BSZ]] for k in range(0, len(order), BSZ)]
        assert planned == _golden_batches(golden, benchmark, epoch)


def test_training_loader_workers_and_a_resumed_run_follow_the_draws(synthetic_root, cams, tmp_path):
    args = _train_args(synthetic_root, cams, tmp_path / "run", "--nworker", "2")
    loaders = training.build_loaders(args, DistInfo(), BSZ)
    planned = {}
    for epoch in range(3):
        training.select_training_episodes(args, loaders, epoch, DistInfo(), BSZ)
        planned[epoch] = [loaders.trn_set.episode(i).as_json() for i in loaders.trn_sampler.indices()]
    assert planned[1] != planned[2]
    # a resumed run builds everything again, with other global RNG states, and starts at epoch 2
    np.random.seed(0)
    torch.manual_seed(0)
    resumed = training.build_loaders(_train_args(synthetic_root, cams, tmp_path / "run", "--nworker", "2"),
                                     DistInfo(), BSZ)
    training.select_training_episodes(args, resumed, 2, DistInfo(), BSZ)
    got = []
    for batch in resumed.trn_loader:  # two worker processes load the batches
        got += _names(batch)
        if len(got) >= 4 * NWORKER * BSZ:
            break
    assert got == planned[2][:len(got)]
    assert got[:BSZ] == got[BSZ:2 * BSZ] and got[:BSZ] != got[2 * BSZ:3 * BSZ]  # --nworker 2: pairs of batches


def test_resume_with_another_worker_count_is_refused(synthetic_root, cams, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"format_version": run_checkpoint.FORMAT_VERSION, "epoch": 0, "args": {"nworker": 2}},
               run_dir / run_checkpoint.LAST_NAME)
    args = _train_args(synthetic_root, cams, run_dir, "--nworker", "4", "--resume")
    with pytest.raises(RunFolderError, match=r"resume with --nworker 2 \(got --nworker 4\)"):
        training.load_resume_state(args, run_dir, DistInfo())
    args.episode_rng = "independent"  # independent draws do not depend on the workers
    assert training.load_resume_state(args, run_dir, DistInfo())["epoch"] == 0
    args.episode_rng, args.nworker = "released", 2
    assert training.load_resume_state(args, run_dir, DistInfo())["epoch"] == 0


# SHA-256 of the default (independent) training episodes of fold 0, seed 7, epochs 0-1, 1 and 5 shots, PASCAL
# and COCO on the session's synthetic benchmark, measured before --episode-rng existed (commit ca9c67c).
INDEPENDENT_SHA256 = "2625f9524e688a004487ddbcfe7330f55040f5175d526593e428009d2f4f2384"


def test_default_training_draws_unchanged(synthetic_root, cams):
    record = []
    for benchmark in ("pascal", "coco"):
        for shot in (1, 5):
            ds = build_dataset(benchmark, datapath=synthetic_root, fold=0, split="trn", shot=shot, img_size=16,
                               seed=7, splitpath=synthetic_root / "splits", **_cam_kw(cams, benchmark))
            for epoch in (0, 1):
                ds.set_epoch(epoch)
                record.append([ds.episode(i).as_json() for i in range(len(ds))])
    digest = hashlib.sha256(json.dumps(record).encode()).hexdigest()
    assert digest == INDEPENDENT_SHA256
