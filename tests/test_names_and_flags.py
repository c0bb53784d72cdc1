"""Names where people read them (labelled vis/ pictures, class-name synonyms in predict.py, the foreground
probability), flag spellings (--use-original-imgsize, --logpath), and --clip-weights random."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import predict
from common.vis import Visualizer, episode_panel
from data.benchmarks import COCO_CLASSES, PASCAL_CLASSES
from engine import args as engine_args
from priors import cam_job
from engine.args import build_parser, parse_args, resolve_run_dir
from data.cam_manifest import MANIFEST_NAME
from apps.predictor import SYNONYMS, Segmenter, match_class_name, prompt_classes
from model import build_model
from priors.recipes import clip_gradcam as cg
from priors.clip_weights import ClipWeightsError, random_clip_seed
from tests.data_helpers import TINY_CLIP


# ---------------------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["--use-original-imgsize", "--use_original_imgsize"])
def test_use_original_imgsize_has_both_spellings(spelling, tmp_path, capsys):
    load = tmp_path / "best_model.pt"
    load.write_bytes(b"x")
    for name in ("CAM_Train", "CAM_Val"):
        (tmp_path / name).mkdir(exist_ok=True)
    args = parse_args("test", ["--datapath", str(tmp_path), "--load", str(load), "--bsz", "1", spelling])
    assert args.use_original_imgsize is True
    with pytest.raises(SystemExit):
        parse_args("test", ["--datapath", str(tmp_path), "--load", str(load), spelling])
    assert "argument --use-original-imgsize: needs --bsz 1" in capsys.readouterr().err


def test_help_shows_the_new_spelling_and_the_default_run_folder():
    for script in ("train", "test"):
        text = " ".join(build_parser(script).format_help().split())
        assert "(default: )" not in text
        assert f"(default: {engine_args.LOG_ROOT}/_" in text
    test_help = build_parser("test").format_help()
    assert "--use-original-imgsize" in test_help and "--use_original_imgsize " not in test_help.split("works")[0]


def test_a_logpath_ending_in_log_is_not_suffixed_again(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_args, "LOG_ROOT", tmp_path)
    assert resolve_run_dir("fake.log", training=True) == tmp_path / "fake.log"
    assert resolve_run_dir("fake", training=True) == tmp_path / "fake.log"  # as released
    (tmp_path / "old.log.log").mkdir()  # a run of an earlier version: --resume still finds it
    assert resolve_run_dir("old.log", training=True) == tmp_path / "old.log.log"
    (tmp_path / "old.log").mkdir()
    assert resolve_run_dir("old.log", training=True) == tmp_path / "old.log"


# ---------------------------------------------------------------------------------------------------------
# Labelled vis/ pictures
# ---------------------------------------------------------------------------------------------------------
def test_vis_pictures_keep_the_released_name_and_gain_a_title_and_captions(tmp_path):
    torch.manual_seed(0)
    side, nshot = 64, 2
    batch = {"support_imgs": torch.randn(1, nshot, 3, side, side), "support_masks": torch.ones(1, nshot, side, side),
             "query_img": torch.randn(1, 3, side, side), "query_mask": torch.ones(1, side, side),
             "class_id": torch.tensor([15])}
    pred = torch.zeros(1, side, side)
    labelled = Visualizer(tmp_path / "named", {15: "pottedplant"}).save_batch(batch, pred, 3, torch.tensor([0.25]))
    plain = Visualizer(tmp_path / "ids").save_batch(batch, pred, 3, torch.tensor([0.25]))
    assert [p.name for p in labelled] == [p.name for p in plain] == ["3_0_class-15_iou-0.25.jpg"]
    picture = np.asarray(Image.open(labelled[0]))
    panel = episode_panel(batch["support_imgs"][0], batch["support_masks"][0], batch["query_img"][0],
                          batch["query_mask"][0], pred[0])
    header = picture.shape[0] - panel.shape[0]
    assert picture.shape[1] == panel.shape[1] and header >= 20  # a title line and a caption line above
    assert (picture[:header] < 128).any()  # text was written
    named, by_id = np.asarray(Image.open(labelled[0])), np.asarray(Image.open(plain[0]))
    assert (np.abs(named[:header].astype(int) - by_id[:header].astype(int)) > 64).any()  # the name is there


def test_datasets_name_their_classes(synthetic_root):
    from data.dataset import build_dataset

    cams = synthetic_root / "no_cams"
    common = dict(datapath=synthetic_root, fold=1, shot=1, img_size=64, cam_train_path=cams, cam_val_path=cams,
                  splitpath=synthetic_root / "splits", nepisodes=2)
    pascal = build_dataset("pascal", split="test", **common)
    assert pascal.class_names() == {c: PASCAL_CLASSES[c] for c in range(5, 10)}
    coco = build_dataset("coco", split="test", **common)
    assert coco.class_names() == {c: COCO_CLASSES[c] for c in coco.class_ids}


# ---------------------------------------------------------------------------------------------------------
# Class names in predict.py / Segmenter
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("given, vocabulary, expected", [
    ("airplane", "pascal", "aeroplane"), ("TV", "pascal", "tvmonitor"), ("television", "pascal", "tvmonitor"),
    ("motorcycle", "pascal", "motorbike"), ("couch", "pascal", "sofa"), ("plant", "pascal", "pottedplant"),
    ("aeroplane", "coco", "airplane"), ("motorbike", "coco", "motorcycle"), ("sofa", "coco", "couch"),
    ("tvmonitor", "coco", "tv"), ("pottedplant", "coco", "potted plant"), ("diningtable", "coco", "dining table"),
])
def test_synonyms_are_read_as_the_benchmark_names(given, vocabulary, expected):
    classes, index = prompt_classes(given, vocabulary)
    assert classes == (PASCAL_CLASSES if vocabulary == "pascal" else COCO_CLASSES) and classes[index] == expected
    match = match_class_name(given, vocabulary)
    assert match.name == expected and match.how in ("synonym", "exact")


def test_every_synonym_names_a_class_of_its_vocabulary():
    for vocabulary, names in (("pascal", PASCAL_CLASSES), ("coco", COCO_CLASSES)):
        assert set(SYNONYMS[vocabulary].values()) <= set(names)


def test_a_new_class_name_is_said_to_be_new():
    match = match_class_name("aeroplan", "pascal")
    assert match.how == "new" and prompt_classes("aeroplan")[1] == 20
    assert "new to the pascal vocabulary" in match.message() and "did you mean 'aeroplane'" in match.message()
    assert "--vocabulary coco" in match_class_name("zebra", "pascal").message()
    assert match_class_name("Dining Table").message() is None  # exact: nothing to say


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("vgg16", backbone_weights=None, use_original_imgsize=True)
    clip = cg.build_clip_from_state_dict(cg.random_clip_state_dict(0, **TINY_CLIP))
    return Segmenter(model, clip, img_size=64)


def _pictures(sizes: list[tuple[int, int]]) -> list[Image.Image]:
    pictures = []
    for i, (w, h) in enumerate(sizes):
        img = Image.new("RGB", (w, h), (40 * i, 90, 200 - 30 * i))
        ImageDraw.Draw(img).ellipse([w // 4, h // 4, 3 * w // 4, 3 * h // 4], fill=(230, 210, 40))
        pictures.append(img)
    return pictures


@pytest.mark.slow
def test_segmenter_returns_the_foreground_probability_on_request(segmenter):
    supports, queries = _pictures([(70, 60), (64, 80)]), _pictures([(90, 72)])
    one = segmenter.segment(supports[:1], queries, "aeroplane", probabilities=True)
    prob = one.query_probabilities[0]
    assert prob.shape == (72, 90) and prob.dtype == np.float32 and 0.0 <= prob.min() <= prob.max() <= 1.0
    np.testing.assert_array_equal(one.query_masks[0], (prob > 0.5).astype(np.uint8))  # 1-shot: mask = prob > 0.5
    np.testing.assert_array_equal(one.support_masks[0], (one.support_probabilities[0] > 0.5).astype(np.uint8))
    two = segmenter.segment(supports, queries, "aeroplane", probabilities=True)
    assert two.query_probabilities[0].shape == (72, 90)
    assert [p.shape for p in two.support_probabilities] == [(60, 70), (80, 64)]


@pytest.mark.slow
def test_segmenter_reads_synonyms_and_warns_about_new_names_once(segmenter, caplog):
    supports, queries = _pictures([(64, 64)]), _pictures([(64, 64)])
    with caplog.at_level(logging.INFO, logger="apps.predictor"):
        result = segmenter.segment(supports, queries, "airplane")
        for _ in range(2):
            new = segmenter.segment(supports, queries, "aeroplan")
    assert result.classes == PASCAL_CLASSES and result.classes[result.class_index] == "aeroplane"
    assert result.query_probabilities == [] and result.support_probabilities == []  # the default: masks only
    assert result.class_match.how == "synonym" and new.class_match.how == "new" and len(new.classes) == 21
    records = [r for r in caplog.records if r.name == "apps.predictor"]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]  # the new name is told once
    assert "'airplane' is 'aeroplane'" in records[0].getMessage() and "new to the pascal" in records[1].getMessage()


@pytest.mark.slow
def test_predict_cli_writes_probabilities_and_records_the_class_reading(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("resnet50", backbone_weights="none")
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "best_model.pt")
    torch.save(cg.random_clip_state_dict(0, **TINY_CLIP), tmp_path / "clip.pt")
    for name, picture in zip(("s.jpg", "q.png"), _pictures([(70, 60), (90, 72)])):
        picture.save(tmp_path / name)
    out = tmp_path / "out"
    assert predict.cli(["--load", str(tmp_path / "best_model.pt"), "--clip-weights", str(tmp_path / "clip.pt"),
                        "--class-name", "airplane", "--support", str(tmp_path / "s.jpg"), "--query",
                        str(tmp_path / "q.png"), "--out", str(out), "--img-size", "64", "--device", "cpu",
                        "--probability"]) == 0
    record = json.loads((out / "predict.json").read_text())
    assert record["class"]["prompt_name"] == "aeroplane" and record["class"]["read_as"] == "synonym"
    assert record["random_clip_weights"] is False and record["prompts"][record["class_index"]].endswith("aeroplane")
    probability = np.asarray(Image.open(out / "q_probability.png"))
    mask = np.asarray(Image.open(out / "q_mask.png"))
    assert probability.shape == mask.shape == (72, 90) and probability.dtype == np.uint8
    np.testing.assert_array_equal(mask == 255, probability > 127.5)  # 1-shot: the mask is probability > 0.5


# ---------------------------------------------------------------------------------------------------------
# --clip-weights random
# ---------------------------------------------------------------------------------------------------------
def test_random_clip_values():
    assert [random_clip_seed(v) for v in ("random", "random:7", "RN50.pt", "./random", None)] == [0, 7, None, None,
                                                                                                  None]
    with pytest.raises(ClipWeightsError, match="random:SEED"):
        random_clip_seed("random:x")


def test_random_clip_identity_names_the_seed_and_tells_its_tensors_apart():
    zero, one = (cg.random_clip_state_dict(seed, **TINY_CLIP) for seed in (0, 1))
    identity = cg.random_clip_identity(0, zero)
    assert identity.startswith("random:0 (") and "no class information" in identity
    assert identity == cg.random_clip_identity(0, cg.random_clip_state_dict(0, **TINY_CLIP))
    assert identity.split("sha256")[1] != cg.random_clip_identity(0, one).split("sha256")[1]


@pytest.mark.slow
def test_cam_script_runs_with_random_clip_weights_and_says_so(synthetic_root, tmp_path, caplog, capsys):
    """generate_cam_voc.py --clip-weights random: RN50 from random weights (real size), a loud warning, and a
    manifest that no real weights' hash can match."""
    images = synthetic_root / "VOC2012" / "JPEGImages"
    lines = (synthetic_root / "splits" / "pascal" / "trn" / "fold0.txt").read_text().splitlines()[:1]
    (tmp_path / "VOC2012" / "JPEGImages").mkdir(parents=True)
    name = lines[0].split("__")[0]
    shutil.copy(images / f"{name}.jpg", tmp_path / "VOC2012" / "JPEGImages")
    for split in ("trn", "val"):
        (tmp_path / "splits" / "pascal" / split).mkdir(parents=True)
        for fold in range(4):
            (tmp_path / "splits" / "pascal" / split / f"fold{fold}.txt").write_text(lines[0] + "\n")
    argv = ["--datapath", str(tmp_path), "--splitpath", str(tmp_path / "splits"), "--clip-weights", "random",
            "--device", "cpu", "--nworker", "0", "--no-progress"]
    assert cam_job.main("pascal", argv[:5] + ["random:x"] + argv[6:]) == 2  # bad input: one line, status 2
    err = capsys.readouterr().err
    assert err.startswith("generate_cam_voc.py: error: --clip-weights random:x: expected 'random' or 'random:SEED'")
    assert len(err.strip().splitlines()) == 1
    with caplog.at_level(logging.INFO):
        assert cam_job.main("pascal", argv) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("RANDOM" in w and "NO class information" in w for w in warnings)
    for folder in ("CAM_Train", "CAM_Val"):
        manifest = json.loads((tmp_path / folder / MANIFEST_NAME).read_text())
        assert manifest["settings"]["clip_weights_sha256"].startswith("random:0 (random CLIP RN50 weights: these CAMs carry "
                                                          "no class information; tensors sha256 ")
        assert torch.load(next((tmp_path / folder).glob("*.pt")), weights_only=True).shape == (50, 50)
