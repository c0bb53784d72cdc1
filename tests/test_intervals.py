"""Per-episode records, bootstrap intervals, several seeds in the table, and paired comparisons, on made-up
episodes (no model; the same code on real test runs: tests/test_test_sweep.py)."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import compare as compare_script
from common.evaluation import IoUMeter
from engine.bootstrap import (bootstrap_samples, mean_samples, percentile_interval, plan_joint_resamples,
                              plan_resamples, resampled_metrics, seed_mean_samples)
from engine.compare import CompareError, ComparedRun, compare_runs
from engine.episode_records import Cell, EpisodeRecords, read_episodes, write_episodes
from engine.tables import RunResult, build_table, table_as_dict, table_csv, table_markdown

CLASSES = (0, 1, 2, 3, 4)


def _records(cell=Cell(0, 0, 1), n=60, queries=20, seed=0, classes=CLASSES, better_by=0) -> EpisodeRecords:
    """``n`` episodes cycling over ``queries`` query images (several episodes per query, as PASCAL's 1000
    episodes over a fold's few hundred images); ``better_by`` more foreground pixels right in every episode."""
    rng = np.random.default_rng(seed)
    query_index = np.arange(n) % queries
    class_id = np.array([classes[q % len(classes)] for q in query_index])
    union = rng.integers(100, 5000, size=(n, 2))
    inter = (union * rng.uniform(0.1, 0.9, size=(n, 2))).astype(np.int64)
    inter[:, 1] += better_by
    union[:, 1] += better_by
    names = np.array([f"img{q:03d}" for q in query_index])
    supports = np.array([[f"sup{(i * 7 + k) % 50:03d}" for k in range(cell.shot)] for i in range(n)])
    return EpisodeRecords(cell, tuple(classes), class_id, names, supports, inter, union.astype(np.int64))


def test_metrics_from_records_equal_the_meter_exactly():
    records = _records(n=37, classes=(0, 3, 7, 9, 11, 12))
    records = dataclasses.replace(records, class_ids=(*records.class_ids, 13))  # no episode: IoU 0, as released
    meter = IoUMeter(records.class_ids, nclass=20)
    for start in range(0, len(records), 4):  # batches of 4, as a test pass adds them
        rows = slice(start, start + 4)
        meter.update(torch.tensor(records.intersection[rows].T, dtype=torch.float32),
                     torch.tensor(records.union[rows].T, dtype=torch.float32),
                     torch.tensor(records.class_id[rows]))
    assert records.metrics() == meter.compute_iou()  # bit for bit


def test_episodes_file_round_trip(tmp_path):
    cells = [_records(Cell(0, 0, 1)), _records(Cell(3, 1, 5), n=8, seed=1)]
    path = write_episodes(tmp_path / "episodes.npz", cells)
    back = read_episodes(path, {c.cell: c.class_ids for c in cells})
    for original in cells:
        copy = back[original.cell]
        assert copy.first_difference(original) is None and copy.metrics() == original.metrics()
        assert np.array_equal(copy.intersection, original.intersection) and np.array_equal(copy.union, original.union)
    with np.load(path, allow_pickle=False) as data:  # a flat table: one row per episode
        assert data["query"].shape == (68,) and data["supports"].shape == (68, 5) and data["supports"][0, 1] == ""


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    records = _records()
    first, second = bootstrap_samples(records, 500), bootstrap_samples(records, 500)
    assert first.shape == (500, 2) and np.array_equal(first, second)
    other_cell = bootstrap_samples(_records(Cell(0, 1, 1)), 500)  # each cell has its own fixed draws
    assert not np.array_equal(first, other_cell)
    miou, fb_iou = records.metrics()
    for column, value in ((0, miou), (1, fb_iou)):
        low, high = percentile_interval(first[:, column])
        assert low < value < high and high - low < 30


def test_episodes_of_one_query_are_resampled_together():
    """One query image per class: every resample draws the same images, so the interval has no width."""
    records = _records(n=30, queries=5)
    low, high = percentile_interval(bootstrap_samples(records, 200)[:, 0])
    assert low == high == pytest.approx(records.metrics()[0])


def _test_run(records: dict, **changes) -> ComparedRun:
    runs = [{"seed": c.seed, "fold": c.fold, "nshot": c.shot, "miou": r.metrics()[0], "fb_iou": r.metrics()[1],
             "class_ids": list(r.class_ids), "checkpoint_sha256": "a" * 64} for c, r in records.items()]
    document = {"benchmark": "pascal", "folds": sorted({c.fold for c in records}), "seeds": [0],
                "nshots": sorted({c.shot for c in records}), "runs": runs, "complete": True, **changes}
    return ComparedRun(Path("/runs/x"), document, records)


def _cells(**kwargs):
    return {Cell(0, f, 1): _records(Cell(0, f, 1), seed=f, **kwargs) for f in (0, 1)}


def test_a_run_against_itself_differs_by_exactly_zero():
    a = _test_run(_cells())
    rows = compare_runs(a, a, resamples=300)
    assert len(rows) == 2 * 3  # mIoU and FB-IoU x (fold 0, fold 1, mean)
    assert all(r.diff == 0.0 and r.interval == (0.0, 0.0) and r.share_b_greater == 0.0 for r in rows)


def test_b_better_on_every_episode_has_an_interval_above_zero():
    a, b = _test_run(_cells()), _test_run(_cells(better_by=300))
    for row in compare_runs(a, b, resamples=300):
        assert row.diff > 0 and row.interval[0] > 0 and row.share_b_greater == 1.0, row


def test_the_same_resamples_pair_the_two_runs():
    a, b = _records(), _records(better_by=50)
    plan = plan_resamples(a, 100)
    assert np.array_equal(resampled_metrics(a, plan), bootstrap_samples(a, 100))  # what a run's interval uses
    assert np.all(resampled_metrics(b, plan)[:, 0] > resampled_metrics(a, plan)[:, 0])


@pytest.mark.parametrize("change, needle", [
    ({"folds": [0, 2]}, "folds [0, 1] (A) vs [0, 2] (B)"),
    ({"seeds": [0, 1]}, "seeds [0] (A) vs [0, 1] (B)"),
    ({"benchmark": "coco"}, "benchmark pascal (A) vs coco (B)"),
])
def test_other_protocols_are_refused(change, needle):
    with pytest.raises(CompareError, match=re.escape(needle)):
        compare_runs(_test_run(_cells()), _test_run(_cells(), **change))


def test_other_episodes_are_refused_naming_the_first():
    other = _cells()
    cell = Cell(0, 1, 1)
    swapped = other[cell].supports.astype("<U16")
    swapped[3, 0] = "elsewhere"
    other[cell] = dataclasses.replace(other[cell], supports=swapped)
    with pytest.raises(CompareError) as error:
        compare_runs(_test_run(_cells()), _test_run(other))
    message = str(error.value)
    assert "seed 0, fold 1, 1-shot, episode 3:" in message and "elsewhere" in message and "\n" not in message


def _run(seed, fold, shot, miou):
    return RunResult(fold=fold, nshot=shot, checkpoint="c", checkpoint_sha256="0" * 64, miou=miou, fb_iou=miou + 20,
                     episodes=60, per_class_iou={}, seed=seed, class_ids=CLASSES)


def test_table_with_seeds_and_intervals():
    runs = [_run(s, f, 1, 40.0 + f + s) for f in (0, 1) for s in (0, 1, 2)]
    records = {r.cell: _records(r.cell, seed=r.seed * 10 + r.fold) for r in runs}
    samples = {cell: bootstrap_samples(r, 200) for cell, r in records.items()}
    seed_means = {(f, 1): seed_mean_samples([records[Cell(s, f, 1)] for s in (0, 1, 2)], 200) for f in (0, 1)}
    rows = build_table(runs, "pascal", "vgg16", samples=samples, seed_means=seed_means)
    miou = rows[0]
    assert miou.ours.folds[:2] == (41.0, 42.0) and miou.ours.mean == 41.5
    assert miou.seeds[2].folds[:2] == (42.0, 43.0) and miou.seeds_sd.folds[0] == pytest.approx(1.0)
    assert all(i is not None for i in (*miou.intervals["ours"].folds[:2], miou.intervals["ours"].mean))
    assert miou.intervals["ours"].folds[0] == percentile_interval(seed_means[0, 1][:, 0])  # the seeds' joint draws
    means = (seed_means[0, 1][:, 0] + seed_means[1, 1][:, 0]) / 2
    assert miou.intervals["ours"].mean == percentile_interval(means)
    assert miou.intervals["seed 1"].folds[1] == percentile_interval(samples[Cell(1, 1, 1)][:, 0])  # its cell's
    diff = miou.intervals["diff"].folds[0]  # ours - paper, shifted by the paper's number
    assert diff == pytest.approx(tuple(v - miou.paper.folds[0] for v in miou.intervals["ours"].folds[0]))
    lines = {(r[0], r[2]): r for r in csv.reader(io.StringIO(table_csv(rows)))}
    assert {("miou", "ours_low"), ("miou", "seed2_high"), ("miou", "seeds_sd"), ("fb_iou", "diff_low")} <= set(lines)
    assert lines["miou", "ours"][3] == "41.00" and lines["miou", "seeds_sd"][3] == "1.00"
    markdown = table_markdown(rows, title="t")
    assert "| 1-shot | ours | 41.00 [" in markdown and "| | sd over seeds | 1.00 | 1.00 |" in markdown.replace("|  |", "| |")
    as_dict = table_as_dict(rows)["miou"]["1"]
    assert as_dict["seeds"]["1"]["folds"][:2] == [41.0, 42.0] and len(as_dict["ours"]["interval"]["folds"][0]) == 2
    json.dumps(as_dict)  # plain JSON values


def test_several_seeds_without_their_joint_samples_get_no_interval_of_the_mean():
    """The seeds' own samples, averaged, would give too narrow an interval: the mean gets none instead."""
    runs = [_run(s, 0, 1, 40.0 + s) for s in (0, 1)]
    samples = {r.cell: bootstrap_samples(_records(r.cell, seed=r.seed), 100) for r in runs}
    miou = build_table(runs, "pascal", "vgg16", samples=samples)[0]
    assert "ours" not in miou.intervals and miou.intervals["seed 1"].folds[0] is not None


def test_one_seed_keeps_its_cells_resamples():
    records = _records()
    assert np.array_equal(seed_mean_samples([records], 300), bootstrap_samples(records, 300))  # bit for bit
    joint, own = plan_joint_resamples([records], 300), plan_resamples(records, 300)
    assert joint.clusters == own.clusters and all(np.array_equal(a, b) for a, b in zip(joint.draws, own.draws))


def test_seeds_querying_the_same_images_draw_them_together():
    """PASCAL-5i and FSS-1000: every seed queries the same images. Seeds with equal counts give one seed's
    distribution back (not one narrowed by sqrt(3), as independent draws would)."""
    cells = [_records(Cell(s, 0, 1), n=200, queries=100, seed=0) for s in (0, 1, 2)]
    plan = plan_joint_resamples(cells, 400)
    assert plan.members and all(m == (0, 1, 2) for per_class in plan.members for m in per_class)
    same = [resampled_metrics(r, plan) for r in cells]
    assert all(np.array_equal(same[0], other) for other in same[1:])  # equal counts, equal draws
    joint = percentile_interval(seed_mean_samples(cells, 400)[:, 0])
    independent = percentile_interval(mean_samples(bootstrap_samples(r, 400) for r in cells)[:, 0])
    one = percentile_interval(bootstrap_samples(cells[0], 400)[:, 0])
    assert (joint[1] - joint[0]) / (one[1] - one[0]) == pytest.approx(1, abs=0.15)
    assert (independent[1] - independent[0]) / (one[1] - one[0]) < 0.75  # ~1/sqrt(3)
    assert np.array_equal(seed_mean_samples(cells, 400), seed_mean_samples(cells[::-1], 400))  # order-free


def _own_queries(records: EpisodeRecords, prefix: str) -> EpisodeRecords:
    return dataclasses.replace(records, query=np.array([prefix + name for name in records.query]))


def test_seeds_with_their_own_queries_keep_each_seeds_images():
    """COCO-20i: each seed draws its own queries. An image is drawn only in place of an image of the same
    seeds, so every seed keeps its number of query images per class; one image shared by two seeds is drawn
    for both."""
    cells = [_own_queries(_records(Cell(s, 0, 1), n=40, queries=20, seed=s), f"s{s}_") for s in (0, 1, 2)]
    shared = cells[1].query.copy()
    shared[cells[1].query == "s1_img000"] = "s0_img000"  # seed 1 happens to query one of seed 0's images too
    cells[1] = dataclasses.replace(cells[1], query=shared)
    plan = plan_joint_resamples(cells, 300)
    for union, member, draw in zip(plan.clusters, plan.members, plan.draws):
        member = np.array([",".join(map(str, m)) for m in member])
        assert np.array_equal(member[draw], np.broadcast_to(member, draw.shape))  # within the stratum
        assert set(member) <= {"0", "1", "2", "0,1"}
    assert (0, 1) in {m for per_class in plan.members for m in per_class}
    for records in cells:
        assert resampled_metrics(records, plan).shape == (300, 2)
    stranger = _own_queries(_records(Cell(3, 0, 1), n=40, queries=20, seed=3), "s3_")
    with pytest.raises(ValueError, match="seed 3, fold 0, 1-shot: the records do not have the plan's query images"):
        resampled_metrics(stranger, plan)


def test_compare_draws_the_same_images_for_every_seed():
    seeds = (0, 1)
    a_cells = {Cell(s, f, 1): _records(Cell(s, f, 1), seed=f) for s in seeds for f in (0, 1)}
    b_cells = {c: _records(c, seed=c.fold, better_by=40 * (c.seed + 1)) for c in a_cells}
    a, b = _test_run(a_cells, seeds=list(seeds)), _test_run(b_cells, seeds=list(seeds))
    rows = {(r.metric, r.fold): r for r in compare_runs(a, b, resamples=200)}
    plan = plan_joint_resamples([a_cells[Cell(s, 0, 1)] for s in seeds], 200)
    diffs = mean_samples(resampled_metrics(b_cells[Cell(s, 0, 1)], plan) - resampled_metrics(a_cells[Cell(s, 0, 1)],
                                                                                              plan) for s in seeds)
    assert rows["miou", 0].interval == percentile_interval(diffs[:, 0])
    assert all(r.interval == (0.0, 0.0) for r in compare_runs(a, a, resamples=50))


def test_compare_script_refuses_a_run_without_records(tmp_path, capsys):
    run = tmp_path / "old.log"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"runs": [], "benchmark": "pascal"}))
    assert compare_script.cli([str(run), str(run), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("compare.py: error: A: ") and "no per-episode records" in err and err.count("\n") == 1


def test_a_four_fold_sweep_has_an_interval_in_every_cell_and_error_bars(tmp_path):
    from PIL import Image

    from engine.tables import write_outputs

    runs = [_run(0, f, k, 40.0 + f + k) for f in range(4) for k in (1, 5)]
    samples = {r.cell: bootstrap_samples(_records(r.cell, seed=r.fold * 10 + r.nshot), 100) for r in runs}
    rows = build_table(runs, "pascal", "resnet50", samples=samples)
    markdown = table_markdown(rows, title="t")
    ours = [line for line in markdown.splitlines() if "| ours |" in line]
    assert len(ours) == 4  # mIoU and FB-IoU, 1- and 5-shot
    for line in ours:
        assert len(re.findall(r"\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]", line)) == 5, line  # 4 folds and the mean
    differences = [line for line in markdown.split("## FB-IoU")[0].splitlines() if "| ours - paper |" in line]
    for line in differences:  # the paper has every mIoU, so every difference has its interval
        assert len(re.findall(r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", line)) == 5, line
    paths = write_outputs(tmp_path, {}, rows, title="t", notes=[])
    image = Image.open(paths["chart"]).convert("RGB")
    assert (0x20, 0x20, 0x20) in {colour for _, colour in image.getcolors(maxcolors=1 << 20)}  # error bars


def test_compare_script_names_an_out_that_is_a_file(tmp_path, capsys):
    a = tmp_path / "a"
    a.mkdir()
    records = _cells()
    write_episodes(a / "episodes.npz", records.values())
    document = _test_run(records).document
    (a / "results.json").write_text(json.dumps({**document, "episodes_file": "episodes.npz"}))
    (tmp_path / "file").write_text("")
    assert compare_script.cli([str(a), str(a), "--out", str(tmp_path / "file")]) == 2
    assert "--out " + str(tmp_path / "file") + " is a file" in capsys.readouterr().err
    assert compare_script.cli([str(a), str(a / "results.json"), "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "compare.json").read_text())["same_checkpoints"] is True
