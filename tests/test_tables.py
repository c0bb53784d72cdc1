"""The paper's numbers (engine/paper_results.json), the sweep table and its chart, on made-up runs (no model)."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from data.benchmarks import NFOLDS
from engine.chart import write_miou_chart
from engine.paper_results import METRICS, PAPER_RESULTS_FILE, FoldValues, paper_row, paper_source
from engine.tables import (RunResult, build_table, table_as_dict, table_csv, table_markdown, table_notes,
                           write_outputs)

REPO = Path(__file__).resolve().parents[1]


def _runs(folds, shots, base=50.0):
    return [RunResult(fold=f, nshot=k, checkpoint=f"/ckpt/f{f}.pt", checkpoint_sha256="0" * 64,
                      miou=base + f + k / 10 + 0.004, fb_iou=70.0 - f, episodes=1000, per_class_iou={"0": 1.0})
            for f in folds for k in shots]


def test_paper_file_has_every_setting_and_no_invented_fb_iou():
    doc = json.loads(PAPER_RESULTS_FILE.read_text())
    assert "2508.16159" in doc["source"] and "2412.17601" in doc["source"]
    for benchmark in ("pascal", "coco"):
        for backbone in ("vgg16", "resnet50"):
            for shot in (1, 5):
                miou = paper_row(benchmark, backbone, shot, "miou")
                assert None not in miou.folds and miou.mean is not None
                # the source gives no FB-IoU: it stays unknown
                assert paper_row(benchmark, backbone, shot, "fb_iou") == FoldValues.empty()
    assert paper_row("pascal", "vgg16", 1, "miou").folds == (58.2, 63.9, 52.9, 51.2)
    assert paper_row("pascal", "resnet18", 1, "miou") == FoldValues.empty()
    assert paper_row("coco", "resnet50", 2, "miou") == FoldValues.empty()


def test_readme_results_table_equals_the_paper_file():
    """The README shows the paper's numbers; they must be the data file's (their one home)."""
    titles = {"PASCAL-5i": "pascal", "COCO-20i": "coco", "VGG16": "vgg16", "ResNet50": "resnet50"}
    section = (REPO / "README.md").read_text().split("## Results", 1)[1].split("\n## ", 1)[0]
    assert "engine/paper_results.json" in section
    rows = re.findall(r"^\| (PASCAL-5i|COCO-20i) \| (VGG16|ResNet50) \| (\d) \|((?: [\d.]+ \|){5})", section, re.M)
    assert len(rows) == 8
    for bench, backbone, shot, numbers in rows:
        values = [float(x) for x in numbers.strip(" |").split(" | ")]
        row = paper_row(titles[bench], titles[backbone], int(shot), "miou")
        assert values == [*row.folds, row.mean], (bench, backbone, shot)


def test_table_cells_means_and_differences():
    runs = _runs(range(NFOLDS), (1, 5))
    rows = build_table(runs, "pascal", "vgg16")
    assert [(r.metric, r.shot) for r in rows] == [(m, k) for m in METRICS for k in (1, 5)]
    one = rows[0]
    assert one.ours.folds == tuple(r.miou for r in runs if r.nshot == 1)
    assert one.ours.mean == pytest.approx(sum(one.ours.folds) / NFOLDS)
    assert one.paper == paper_row("pascal", "vgg16", 1, "miou")
    assert one.diff.folds[0] == pytest.approx(50.104 - 58.2) and one.diff.mean == pytest.approx(one.ours.mean - 56.5)
    fb = rows[2]
    assert fb.paper == FoldValues.empty() and fb.diff == FoldValues.empty()


def test_partial_folds_leave_cells_and_mean_difference_empty():
    rows = build_table(_runs((0, 1), (1,)), "pascal", "vgg16")
    miou = rows[0]
    assert miou.ours.folds[2:] == (None, None) and miou.ours.mean == pytest.approx(50.604)
    assert miou.diff.folds[2:] == (None, None) and miou.diff.mean is None
    notes = table_notes(rows, paper_source())
    assert any("fold(s) 0, 1 only" in n for n in notes) and any("2508.16159" in n for n in notes)
    lines = list(csv.reader(io.StringIO(table_csv(rows))))
    assert lines[0] == ["metric", "shot", "line", "fold0", "fold1", "fold2", "fold3", "mean"]
    assert lines[1] == ["miou", "1", "ours", "50.10", "51.10", "", "", "50.60"]
    assert lines[2] == ["miou", "1", "paper", "58.2", "63.9", "52.9", "51.2", "56.5"]
    assert lines[3] == ["miou", "1", "diff", "-8.10", "-12.80", "", "", ""]
    assert lines[5] == ["fb_iou", "1", "paper", "", "", "", "", ""]
    md = table_markdown(rows, title="T", notes=notes)
    assert "| 1-shot | ours | 50.10 | 51.10 |  |  | 50.60 |" in md and "## FB-IoU (%)" in md
    as_dict = table_as_dict(rows)
    assert as_dict["miou"]["1"]["paper"] == {"folds": [58.2, 63.9, 52.9, 51.2], "mean": 56.5}
    assert as_dict["fb_iou"]["1"]["diff"] == {"folds": [None] * NFOLDS, "mean": None}


def test_without_paper_every_paper_cell_is_empty():
    rows = build_table(_runs((0,), (1, 5)), "pascal", "vgg16", with_paper=False)
    assert all(r.paper == FoldValues.empty() and r.diff == FoldValues.empty() for r in rows)


def _is_png(path: Path) -> Image.Image:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(path)
    image.load()
    assert image.format == "PNG" and 300 <= image.width <= 3000 and 200 <= image.height <= 2000
    return image.convert("RGB")


def test_chart_is_a_valid_png_with_both_bar_colours(tmp_path):
    rows = build_table(_runs(range(NFOLDS), (1, 5)), "pascal", "vgg16")
    path = write_miou_chart({r.shot: (r.ours, r.paper) for r in rows if r.metric == "miou"}, tmp_path / "c.png",
                            title="IMR-HSNet, PASCAL-5i, vgg16")
    image = _is_png(path)
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20)}
    assert (0x1F, 0x77, 0xB4) in colours and (0xB0, 0xB0, 0xB0) in colours  # ours and paper bars
    assert image.width > image.height  # two panels side by side


def test_write_outputs_writes_the_four_files(tmp_path):
    rows = build_table(_runs((0,), (1,)), "coco", "resnet50")
    paths = write_outputs(tmp_path, {"x": 1}, rows, title="t", notes=["n"])
    assert sorted(p.name for p in paths.values()) == ["results.json", "table.csv", "table.md", "table.png"]
    assert json.loads(paths["results"].read_text()) == {"x": 1}
    _is_png(paths["chart"])
