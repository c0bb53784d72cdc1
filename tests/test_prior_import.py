"""data/priors.py (``python -m data.priors import``) and evaluate_priors.py on the synthetic benchmark: the ground
truth imported as the prior scores 100, empty priors 0, and bad or missing files end in one line naming them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.io import names_sha256
from data import priors as data_priors
from data.benchmarks import PASCAL_CLASSES, fold_classes
from data.cam_files import cam_path
from data.cam_manifest import CamSettings, image_identity, read_manifest, write_manifest
from data.splits import read_pascal_split
from priors import report as prior_report


def _import(root: Path, out: Path, *flags: str) -> int:
    return data_priors.main(["import", "--datapath", str(root), "--splitpath", str(root / "splits"), "--out", str(out),
                             "--no-progress", *flags])


def _evaluate(root: Path, priors: Path, out: Path, *flags: str) -> int:
    return prior_report.main(["--datapath", str(root), "--splitpath", str(root / "splits"), "--priors", str(priors),
                              "--out", str(out), "--no-progress", *flags])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def imported(synthetic_root, module_tmp):
    """The PASCAL ground truth imported as priors (the masks are label maps named {image}.png)."""
    out = module_tmp("priors") / "pascal_gt"
    assert _import(synthetic_root, out, "--benchmark", "pascal", "--source",
                   str(synthetic_root / "VOC2012" / "SegmentationClassAug"), "--pattern", "{image}.png",
                   "--values", "label") == 0
    return out


def test_ground_truth_as_prior_scores_100(synthetic_root, imported, tmp_path):
    assert _evaluate(synthetic_root, imported, tmp_path / "q") == 0
    report = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert report["miou_best"] == 100.0 and report["miou_at_0.5"] == 100.0 and report["background_iou_best"] == 100.0
    assert [row["class_id"] for row in report["classes"]] == fold_classes("pascal", 0)
    assert all(row["iou_best"] == 100.0 for row in report["classes"])
    assert 0 < report["miou_full_image"] < 50  # a whole-image prior: the share of the image a class covers
    assert report["pairs"] == len(read_pascal_split(synthetic_root / "splits", "val", 0))
    for name in ("quality.md", "quality.csv", "examples.png"):
        assert (tmp_path / "q" / name).stat().st_size > 0
    assert "| **mean** |" in (tmp_path / "q" / "quality.md").read_text()
    with Image.open(tmp_path / "q" / "examples.png") as picture:
        assert picture.size[1] == 8 * 132  # eight rows of 128 px pictures
    # at the mask's resolution the 50x50 prior loses detail, but stays far above the whole-image prior
    assert _evaluate(synthetic_root, imported, tmp_path / "q_image", "--resolution", "image") == 0
    at_image = json.loads((tmp_path / "q_image" / "quality.json").read_text())
    assert 70 < at_image["miou_best"] < 100


def test_imported_files_and_resume(synthetic_root, imported, capsys):
    """The folder's cam_manifest.json records the import as the CAM scripts record their recipe: settings, and
    the image each prior was checked against."""
    manifest = read_manifest(imported)
    settings = manifest.settings.settings
    assert manifest.settings.recipe == "imported/1" and settings["values"] == "label" and settings["resize"] == "nearest"
    assert settings["class_names_sha256"] == names_sha256(PASCAL_CLASSES) and settings["cam_size"] == 50
    assert not (imported / "prior_import.json").exists()
    name, cls = read_pascal_split(synthetic_root / "splits", "val", 1)[0]
    image = synthetic_root / "VOC2012" / "JPEGImages" / f"{name}.jpg"
    assert cls in manifest.images[name].classes and manifest.images[name].identity == image_identity(image)
    cam = torch.load(cam_path(imported, name, cls), weights_only=True)
    assert cam.shape == (50, 50) and cam.dtype == torch.float32 and set(cam.unique().tolist()) <= {0.0, 1.0}
    # a rerun skips every file; other settings into the same folder are refused
    assert _import(synthetic_root, imported, "--benchmark", "pascal", "--source",
                   str(synthetic_root / "VOC2012" / "SegmentationClassAug"), "--pattern", "{image}.png",
                   "--values", "label") == 0
    assert "0 imported" in capsys.readouterr().out
    assert _import(synthetic_root, imported, "--benchmark", "pascal", "--source",
                   str(synthetic_root / "VOC2012" / "SegmentationClassAug"), "--pattern", "{image}.png",
                   "--values", "label", "--resize", "area") == 2
    assert "holds priors imported with other settings (resize: 'nearest' -> 'area')" in _error_line(capsys)


def test_a_folder_imported_by_an_earlier_version_gets_its_manifest(synthetic_root, imported, tmp_path, capsys):
    """Earlier versions recorded the settings in prior_import.json: the same import again re-imports the priors
    into the folder and records them in a manifest that replaces it; other settings are refused."""
    old = tmp_path / "old"
    shutil.copytree(imported, old)
    manifest = read_manifest(old)
    legacy = {"recipe": "imported", **{k: v for k, v in manifest.settings.settings.items() if k != "class_names_sha256"}}
    (old / "cam_manifest.json").unlink()
    (old / "prior_import.json").write_text(json.dumps(legacy))
    flags = ["--benchmark", "pascal", "--source", str(synthetic_root / "VOC2012" / "SegmentationClassAug"),
             "--pattern", "{image}.png", "--values", "label"]
    assert _import(synthetic_root, old, *flags, "--values", "0-255") == 2
    assert "other settings (values: 'label' -> '0-255'; resize: 'nearest' -> 'area')" in _error_line(capsys)
    assert _import(synthetic_root, old, *flags) == 0
    total = sum(len(record.classes) for record in manifest.images.values())
    assert f"{total} priors: {total} imported" in capsys.readouterr().out
    again = read_manifest(old)
    assert again.settings == manifest.settings and again.images == manifest.images
    assert not (old / "prior_import.json").exists()


def test_empty_priors_score_0(synthetic_root, imported, tmp_path):
    empty = tmp_path / "empty"
    for path in imported.rglob("*--*.pt"):
        target = empty / path.relative_to(imported)
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(torch.zeros(50, 50), target)
    assert _evaluate(synthetic_root, empty, tmp_path / "q", "--examples", "0") == 0
    report = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert report["miou_best"] == 0.0 and report["miou_at_0.5"] == 0.0


def test_missing_and_bad_priors_are_named(synthetic_root, imported, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(imported, partial)
    name, cls = read_pascal_split(synthetic_root / "splits", "val", 0)[0]
    cam_path(partial, name, cls).unlink()
    assert _evaluate(synthetic_root, partial, tmp_path / "q") == 2
    line = _error_line(capsys)
    assert "1 of " in line and str(cam_path(partial, name, cls)) in line and "pascal val fold 0" in line
    torch.save(torch.zeros(3, 50, 50), cam_path(partial, name, cls))
    assert _evaluate(synthetic_root, partial, tmp_path / "q") == 2
    assert f"CAM {cam_path(partial, name, cls)} must hold a 2-D tensor" in _error_line(capsys)
    assert not (tmp_path / "q").exists()


def test_import_checks_the_source_files(synthetic_root, tmp_path, capsys):
    masks = synthetic_root / "VOC2012" / "SegmentationClassAug"
    source = tmp_path / "source"
    shutil.copytree(masks, source)
    common = ["--benchmark", "pascal", "--source", str(source), "--pattern", "{image}.png", "--split", "val"]
    val_names = [name for name, _ in read_pascal_split(synthetic_root / "splits", "val", 0)]
    first = source / f"{val_names[0]}.png"
    first.unlink()
    assert _import(synthetic_root, tmp_path / "out", *common, "--values", "label") == 2
    line = _error_line(capsys)
    assert f"prior files are missing under {source} (first: {first}" in line and "missing_priors.txt" in line
    assert (tmp_path / "out" / "missing_priors.txt").read_text().splitlines() == [str(first)]
    assert not list((tmp_path / "out").rglob("*.pt"))
    size = Image.open(synthetic_root / "VOC2012" / "JPEGImages" / f"{val_names[0]}.jpg").size
    other = next(n for n in val_names if Image.open(masks / f"{n}.png").size not in (size, size[::-1]))
    shutil.copy(masks / f"{other}.png", first)  # present again, but of another image's size
    assert _import(synthetic_root, tmp_path / "out", *common, "--values", "label") == 2
    line = _error_line(capsys)
    assert f"prior {first} is " in line and f"but its image {synthetic_root}" in line
    shutil.copy(masks / first.name, first)
    # grey levels read as 0-1
    assert _import(synthetic_root, tmp_path / "out2", *common, "--values", "0-1") == 2
    assert "outside --values 0-1 (pass --values 0-255 for grey levels)" in _error_line(capsys)
    # a folder of generated CAMs is not an import target, nor a folder with an unreadable manifest
    write_manifest(tmp_path / "cams", CamSettings("clip-es/1", {}))
    assert _import(synthetic_root, tmp_path / "cams", *common, "--values", "label") == 2
    assert "holds CAMs made by the recipe 'clip-es/1'" in _error_line(capsys)
    (tmp_path / "cams" / "cam_manifest.json").write_text("{}")
    assert _import(synthetic_root, tmp_path / "cams", *common, "--values", "label") == 2
    assert "cam_manifest.json that cannot be read as a CAM manifest" in _error_line(capsys)
    with pytest.raises(SystemExit) as stop:  # a bad flag: argparse's two lines, status 2
        _import(synthetic_root, tmp_path / "x", "--benchmark", "fss", "--source", str(source), "--naming", "tlg")
    assert stop.value.code == 2 and "--naming: tlg has no fss files; give --pattern" in capsys.readouterr().err


def test_tlg_layouts_import_without_code(synthetic_root, tmp_path):
    """TLG's published pseudo-masks: COCO {train2014|val2014}/{name}.png label maps (the layout of the COCO
    annotations) and PASCAL {image}--{class}.png label maps; both imported with --naming tlg alone."""
    coco = tmp_path / "coco_tlg"
    assert _import(synthetic_root, coco, "--benchmark", "coco", "--naming", "tlg", "--split", "val", "--source",
                   str(synthetic_root / "COCO2014" / "annotations")) == 0
    assert _evaluate(synthetic_root, coco, tmp_path / "q_coco", "--benchmark", "coco", "--examples", "1") == 0
    assert json.loads((tmp_path / "q_coco" / "quality.json").read_text())["miou_best"] == 100.0
    pascal_source = tmp_path / "PseMask_Val"
    pascal_source.mkdir()
    masks = synthetic_root / "VOC2012" / "SegmentationClassAug"
    for name, cls in read_pascal_split(synthetic_root / "splits", "val", 0):
        shutil.copy(masks / f"{name}.png", pascal_source / f"{name}--{cls}.png")
    pascal = tmp_path / "pascal_tlg"
    assert _import(synthetic_root, pascal, "--benchmark", "pascal", "--naming", "tlg", "--split", "val",
                   "--source", str(pascal_source)) == 2  # the other folds' val pairs are not there
    for fold in (1, 2, 3):
        for name, cls in read_pascal_split(synthetic_root / "splits", "val", fold):
            shutil.copy(masks / f"{name}.png", pascal_source / f"{name}--{cls}.png")
    assert _import(synthetic_root, pascal, "--benchmark", "pascal", "--naming", "tlg", "--split", "val",
                   "--source", str(pascal_source)) == 0
    assert not (pascal / "missing_priors.txt").exists()  # the earlier run's list, out of date, is gone
    assert _evaluate(synthetic_root, pascal, tmp_path / "q_pascal", "--examples", "0") == 0
    assert json.loads((tmp_path / "q_pascal" / "quality.json").read_text())["miou_best"] == 100.0


def test_fss_grey_masks_and_npy(synthetic_root, tmp_path):
    """FSS-1000's 0..255 masks as priors (nearest resize): 100 at 0.5, the masks' own rule (>= 128); and .npy files."""
    out = tmp_path / "fss"
    assert _import(synthetic_root, out, "--benchmark", "fss", "--source", str(synthetic_root / "FSS-1000"),
                   "--pattern", "{image}.png", "--resize", "nearest", "--split", "test") == 0
    assert _evaluate(synthetic_root, out, tmp_path / "q", "--benchmark", "fss", "--split", "test",
                     "--examples", "0") == 0
    report = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert report["miou_at_0.5"] == 100.0 and len(report["classes"]) == 4
    npy = tmp_path / "npy"
    for png in (synthetic_root / "FSS-1000").rglob("*.png"):
        target = npy / png.relative_to(synthetic_root / "FSS-1000")
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target.with_suffix(".npy"), np.asarray(Image.open(png), dtype=np.float32) / 255)
    assert _import(synthetic_root, tmp_path / "fss_npy", "--benchmark", "fss", "--source", str(npy),
                   "--pattern", "{image}.npy", "--resize", "nearest", "--split", "test") == 0
    name = next((out).rglob("*--*.pt")).relative_to(out)
    torch.testing.assert_close(torch.load(tmp_path / "fss_npy" / name, weights_only=True),
                               torch.load(out / name, weights_only=True))


@pytest.mark.slow
def test_the_scripts_end_bad_input_in_one_line(synthetic_root, tmp_path):
    """The real entry points, in subprocesses: ``python -m data.priors`` and ``evaluate_priors.py``."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    common = ["--datapath", str(synthetic_root), "--splitpath", str(synthetic_root / "splits")]
    empty = tmp_path / "empty"
    empty.mkdir()
    runs = {
        "python -m data.priors": [sys.executable, "-m", "data.priors", "import", "--benchmark", "pascal", "--source",
                                  str(empty), "--out", str(tmp_path / "out"), *common],
        "evaluate_priors.py": [sys.executable, "evaluate_priors.py", "--priors", str(empty), "--out",
                               str(tmp_path / "q"), *common],
    }
    for prog, argv in runs.items():
        proc = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr
        assert str(empty) in lines[0] and "missing" in lines[0]
