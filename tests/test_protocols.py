"""test.py --protocol: each preset against the values read from its repository's test code (the table below, with
the citation), --protocol hsnet printing the released lines byte for byte, a preset with original-size labels on
the synthetic benchmark, explicit flags overriding a preset, bad input, and compare.py refusing runs of other
protocols unless --across-protocols (tiny, CPU)."""
from __future__ import annotations

import json

import pytest
import torch

import compare as compare_script
import test as test_script
from engine import run_checkpoint as ckpt
from engine.protocols import DEFAULT_PROTOCOL, PROTOCOLS
from tests.test_test_sweep import FINAL_LINE, GOLDEN, _mask_following_model
from tests.train_helpers import make_tiny_inputs

BAM_SEEDS = (510, 365, 382, 322, 988)  # np.random.seed(123); np.random.randint(0, 1000, 5)
TEN_SEEDS = BAM_SEEDS + (98, 742, 17, 595, 106)  # the same with 10
# name: seeds, episodes per fold {benchmark: n} (None: the released count), original-size labels, statistic;
# the citation: repository@commit file:line, read for this table (docs/evaluation.md has the same)
SOURCES = {
    "hsnet": ((0,), {"pascal": None, "coco": None, "fss": None}, False, "mean",
              "juhongm999/hsnet@6b1bc12 test.py:20 fix_randseed(0), :88 img_size=400; data/pascal.py:30, "
              "data/coco.py:30 1000; data/fss.py:32 every test image"),
    "imr-hsnet": ((0,), {"pascal": 1000, "coco": 1000}, False, "mean",
                  "Whileherham/IMR-HSNet@5757227 test.py:21 fix_randseed(0), :91 img_size=400; data/pascal.py:34, "
                  "data/coco.py:36 1000"),
    "afanet": ((6776,), {"pascal": 1000, "coco": 1000}, False, "mean",
               "jarch-ma/AFANet@583c7e2 test.py:23 fix_randseed(6776), :110 img_size=400; data/pascal.py:34, "
               "data/coco.py:36 1000"),
    "tlg": ((6776,), {"pascal": 1000, "coco": 5000}, False, "mean",
            "jarch-ma/TLG@e65beb1 test.py:25 fix_randseed(6776), :114 img_size=400; data/pascal.py:34 1000, "
            "data/coco.py:36 5000"),
    "bam": (BAM_SEEDS, {"pascal": 1000, "coco": 1000}, True, "mean+best",
            "chunbolang/BAM@c0f935c test.py:36-39 seeds, :193-197 test_num, :175-176 Best/Mean; "
            "config/*/..._split0_resnet50.yaml:44-46 ori_resize: True"),
    "hdmnet": (TEN_SEEDS, {"pascal": 1000, "coco": 10000}, True, "mean+best",
               "Pbihao/HDMNet@39ec8b2 test.py:35-38 seeds, :192-196 test_num, :174-175 Best/Mean; configs "
               "ori_resize: True"),
    "pi-clip": (TEN_SEEDS, {"pascal": 1000, "coco": 5000}, True, "mean+best",
                "vangjin/PI-CLIP@971c598 test.py:25-28 seeds, :182-186 test_num, :164-165 Best/Mean; configs "
                "ori_resize: True"),
    "panet": ((1234, 1235, 1236, 1237, 1238), {"pascal": 1000, "coco": 1000}, False, "mean+sd",
              "kaixin96/PANet@1695bf3 config.py:28 seed 1234, :64-66 n_runs 5, n_steps 1000; test.py:68 seed + run, "
              ":57 labels resized, :141 mean and std"),
}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_each_preset_has_its_sources_values(name):
    seeds, episodes, original, statistic, _ = SOURCES[name]
    protocol = PROTOCOLS[name]
    assert (protocol.seeds, dict(protocol.episodes), protocol.original_labels, protocol.statistic) == \
           (seeds, episodes, original, statistic)
    assert protocol.best_of_seeds == (statistic == "mean+best")
    assert {"seed", "episodes", "labels"} <= set(protocol.sources)  # each value cites its file and line


def test_every_preset_is_tested_and_the_default_is_the_released_one():
    assert set(PROTOCOLS) == set(SOURCES) and DEFAULT_PROTOCOL == "hsnet"


def test_bam_seed_draw_is_numpys():
    np = pytest.importorskip("numpy")
    np_state = np.random.RandomState(123)
    assert tuple(int(s) for s in np_state.randint(0, 1000, 5)) == BAM_SEEDS


@pytest.fixture(scope="module")
def setup(synthetic_root, module_tmp):
    root = module_tmp("protocols")
    tiny = make_tiny_inputs(synthetic_root, root, per_class=3)
    ckpt.save_best(torch.nn.DataParallel(_mask_following_model(0)), root / "fold0")
    return tiny, str(root / "fold0" / "best_model.pt"), root


def _argv(setup, name, *extra):
    tiny, load, root = setup
    return tiny.argv("--load", load, "--logpath", str(root / name), "--bsz", "4", "--nepisodes", "4", *extra)


def _final_lines(run_dir):
    return [m.group(0) for m in FINAL_LINE.finditer((run_dir / "log.txt").read_text())]


@pytest.mark.slow
def test_protocol_hsnet_prints_the_released_lines(setup):
    _, _, root = setup
    assert test_script.cli(_argv(setup, "hsnet", "--protocol", "hsnet")) == 0
    assert _final_lines(root / "hsnet") == [GOLDEN[0][0]]  # the default's line, byte for byte (tests/test_test_sweep)
    record = json.loads((root / "hsnet" / "results.json").read_text())["protocol"]
    assert record["name"] == "hsnet" and record["effective"]["seeds"] == [0]
    assert record["overridden"] == {"nepisodes": [None, 4]}  # --nepisodes 4 given beside it
    assert "Protocol: hsnet" in (root / "hsnet" / "table.md").read_text()


@pytest.mark.slow
def test_an_original_size_label_preset_on_the_synthetic_benchmark(setup, capsys):
    """bam: original-size labels (and --bsz 1, which they need), best seed beside the mean; --seeds, --nepisodes
    given override it, and results.json records both. Then compare.py refuses it against the hsnet run unless
    --across-protocols."""
    tiny, load, root = setup
    argv = tiny.argv("--load", load, "--logpath", str(root / "bam"), "--nepisodes", "3", "--seeds", "0", "1",
                     "--protocol", "bam")
    assert test_script.cli(argv) == 0
    results = json.loads((root / "bam" / "results.json").read_text())
    record = results["protocol"]
    assert record["preset"] == {"seeds": list(BAM_SEEDS), "nepisodes": 1000, "use_original_imgsize": True, "bsz": 1}
    assert record["effective"] == {"seeds": [0, 1], "nepisodes": 3, "use_original_imgsize": True, "bsz": 1}
    assert record["overridden"] == {"seeds": [list(BAM_SEEDS), [0, 1]], "nepisodes": [1000, 3]}
    assert record["best_of_seeds"] and results["seeds"] == [0, 1]
    best = results["table"]["miou"]["1"]["seeds_best"]["folds"][0]
    assert best == max(run["miou"] for run in results["runs"])
    table = (root / "bam" / "table.md").read_text()
    assert "| best seed (protocol's, optimistic) |" in table and "overridden by --nepisodes 3" in table
    args = json.loads((root / "bam" / "args.json").read_text())
    assert args["use_original_imgsize"] is True and args["bsz"] == 1 and args["protocol"] == "bam"

    if not (root / "hsnet2").exists():
        assert test_script.cli(_argv(setup, "hsnet2", "--bsz", "1", "--nepisodes", "3", "--seeds", "0", "1")) == 0
    capsys.readouterr()
    out = root / "cmp"
    assert compare_script.cli([str(root / "hsnet2"), str(root / "bam"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "other protocols: hsnet (A) vs bam (B)" in err and "--across-protocols" in err and not out.exists()
    assert compare_script.cli([str(root / "hsnet2"), str(root / "bam"), "--out", str(out), "--across-protocols"]) == 0
    printed = capsys.readouterr().out
    assert "across protocols" in printed and "no paired interval" in printed
    document = json.loads((out / "compare.json").read_text())
    assert document["across_protocols"]["b"] == "bam" and document["bootstrap"] is None
    assert all(row["interval"] is None for row in document["rows"])


@pytest.mark.parametrize("extra, needle", [
    (["--protocol", "nonesuch"], "argument --protocol: invalid choice: 'nonesuch'"),
    (["--protocol", "bam", "--benchmark", "fss"], "argument --protocol: bam defines no FSS-1000 test"),
    (["--protocol", "bam", "--bsz", "4"], "argument --bsz: --protocol bam scores labels at their original size"),
    (["--protocol", "afanet", "--use-original-imgsize", "--bsz", "4"], "--use-original-imgsize: needs --bsz 1"),
])
def test_bad_protocol_input_is_one_line_and_exit_2(setup, capsys, extra, needle):
    tiny, load, root = setup
    with pytest.raises(SystemExit) as exc:
        test_script.cli(tiny.argv("--load", load, "--logpath", str(root / "bad"), *extra))
    assert exc.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and needle in errors[0], errors
    assert not (root / "bad").exists()


def test_the_protocol_table_shares_test_passes_between_presets():
    from benchmarks.bench_protocols import pass_kinds

    kinds = pass_kinds(list(PROTOCOLS.values()), "pascal")
    assert kinds == {(1000, False): [0, 6776, 1234, 1235, 1236, 1237, 1238], (1000, True): list(TEN_SEEDS)}
    assert pass_kinds([PROTOCOLS["tlg"], PROTOCOLS["hdmnet"]], "coco") == {(5000, False): [6776],
                                                                          (10000, True): list(TEN_SEEDS)}


def test_best_minus_mean_is_zero_for_equal_seeds_and_positive_otherwise():
    import numpy as np

    from benchmarks.bench_protocols import best_minus_mean_samples
    from engine.episode_records import Cell, EpisodeRecords

    def records(seed, hits):
        n = len(hits)
        inter = np.stack([np.full(n, 50), np.asarray(hits)], axis=1).astype(np.int64)
        union = np.stack([np.full(n, 100), np.full(n, 10)], axis=1).astype(np.int64)
        return EpisodeRecords(Cell(seed, 0, 1), (0, 1), np.array([0, 1] * (n // 2)),
                              np.array([f"q{i}" for i in range(n)]), np.array([["s"]] * n), inter, union)

    same = [records(seed, [5, 6, 7, 8]) for seed in (1, 2, 3)]
    assert np.allclose(best_minus_mean_samples(same, 50), 0)
    spread = [records(1, [5, 6, 7, 8]), records(2, [9, 9, 9, 9]), records(3, [1, 2, 1, 2])]
    samples = best_minus_mean_samples(spread, 200)
    assert (samples >= 0).all() and samples.mean() > 0
